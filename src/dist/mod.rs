//! Data-parallel training across processes on the field's collective libraries: the engine
//! (MPI through rsmpi, the `mpi` cargo feature; [`crate::collective::Local`] for one process),
//! the launchers that start ranks ([`launcher`]), and what keeps a broken group from hanging
//! (a panic or an error ends the process without finalising MPI, so `mpirun` tears the job
//! down naming the rank; a watchdog ends a rank stuck in a collective). The training loop sees
//! only a [`Group`]; see `train::replicas` for what it does with one.

pub mod launcher;
#[cfg(feature = "mpi")]
pub mod mpi;
mod watchdog;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use crate::collective::{Group, Local};
pub use launcher::Launch;

/// How long a collective may wait before the rank gives up (`--dist-timeout`): long enough for
/// rank 0's kNN monitor between epochs, short enough that a hung job ends the same hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

const BUILD_WITH_MPI: &str = "build with `cargo build --release --features mpi` (needs apt-get \
                              install libopenmpi-dev openmpi-bin libclang-dev)";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistError {
    #[error("launcher environment: {key}=`{value}` is not a valid rank or size")]
    Env { key: String, value: String },
    #[error("{0}")]
    Launch(String),
    #[error(
        "{launcher} started this process as rank {rank} of {world}, but this ssl-train was built \
         without the `mpi` feature: {BUILD_WITH_MPI}"
    )]
    NotBuilt {
        launcher: &'static str,
        rank: usize,
        world: usize,
    },
    #[error(
        "{launcher} says this is rank {rank} of {world}, but MPI sees a world of {mpi_world}: \
         {hint}"
    )]
    WorldMismatch {
        launcher: &'static str,
        rank: usize,
        world: usize,
        mpi_world: usize,
        hint: &'static str,
    },
    #[error(
        "--nproc {nproc}, but {launcher} started {world} ranks; drop --nproc or make them agree"
    )]
    NprocMismatch {
        nproc: usize,
        launcher: &'static str,
        world: usize,
    },
    #[error("MPI: {0}")]
    Mpi(String),
}

/// Whether [`start`] will re-run this command as `nproc` ranks: more than one asked for and no
/// launcher started this process.
pub fn will_launch(nproc: usize) -> Result<bool, DistError> {
    Ok(nproc > 1 && launcher::detect(|k| std::env::var(k).ok())?.is_none())
}

/// Joins the group this process belongs to; call it first in `main`, before any thread starts.
/// Not under a launcher and with `nproc` > 1, re-runs `args` as `nproc` ranks under `mpirun`
/// instead (returning only on failure). `timeout` bounds each collective.
pub fn start(nproc: usize, timeout: Duration, args: &[OsString]) -> Result<Group, DistError> {
    let launch = launcher::detect(|k| std::env::var(k).ok())?;
    let Some(launch) = launch else {
        if nproc > 1 {
            if !cfg!(feature = "mpi") {
                return Err(DistError::Launch(format!(
                    "--nproc {nproc} needs the `mpi` feature: {BUILD_WITH_MPI}"
                )));
            }
            return Err(launcher::exec_mpirun(nproc, args));
        }
        return Ok(Arc::new(Local));
    };
    if nproc > 1 && nproc != launch.world {
        return Err(DistError::NprocMismatch {
            nproc,
            launcher: launch.launcher,
            world: launch.world,
        });
    }
    if launch.world == 1 {
        return Ok(Arc::new(Local));
    }
    if !launch.mpi_wired() {
        return Err(DistError::Launch(format!(
            "{} started this process as rank {} of {}; its ranks meet at MASTER_ADDR:MASTER_PORT, \
             a rendezvous only an NCCL engine would use, and this build's engine is MPI: start \
             the same command with `mpirun -np {}` (or `ssl-train --nproc {}`, or `srun \
             --mpi=pmix`)",
            launch.launcher, launch.rank, launch.world, launch.world, launch.world
        )));
    }
    share_cores(&launch);
    let group = join_mpi(&launch)?;
    end_process_on_panic();
    Ok(Arc::new(watchdog::Watched::new(group, timeout)))
}

#[cfg(feature = "mpi")]
fn join_mpi(launch: &Launch) -> Result<Group, DistError> {
    use crate::collective::Collective;
    let group = mpi::Mpi::init().map_err(DistError::Mpi)?;
    if group.world() != launch.world {
        return Err(DistError::WorldMismatch {
            launcher: launch.launcher,
            rank: launch.rank,
            world: launch.world,
            mpi_world: group.world(),
            hint: "under srun, Open MPI needs `srun --mpi=pmix`; otherwise the launcher and \
                   the MPI library differ",
        });
    }
    Ok(Arc::new(group))
}

#[cfg(not(feature = "mpi"))]
fn join_mpi(launch: &Launch) -> Result<Group, DistError> {
    Err(DistError::NotBuilt {
        launcher: launch.launcher,
        rank: launch.rank,
        world: launch.world,
    })
}

/// Gives each rank its share of the machine's cores for compute and data loading (rayon's
/// pool, candle's and the loader's default), unless the user set `RAYON_NUM_THREADS`.
fn share_cores(launch: &Launch) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = (cores / launch.local_world).max(1);
    // Called before any thread exists (see `start`), so nothing reads the environment
    // concurrently.
    std::env::set_var("RAYON_NUM_THREADS", share.to_string());
}

/// A panic on one rank must end the job, not leave the others waiting in a collective: after
/// the usual message, the process exits without finalising MPI, which makes `mpirun` stop the
/// other ranks and name this one (unwinding would finalise MPI and hang against them).
fn end_process_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
}

/// Ends this rank after an error: in a group of several, at once and without finalising MPI
/// (the others may be inside a collective; `mpirun` then stops them and names this rank).
pub fn exit(group: &Group, code: u8) -> std::process::ExitCode {
    use std::io::Write;
    if group.world() > 1 {
        let _ = std::io::stdout().flush();
        std::process::exit(i32::from(code));
    }
    std::process::ExitCode::from(code)
}

/// `rank R of N: ` in a group of several, else nothing: the prefix of a rank's messages.
pub fn rank_label(group: &Group) -> String {
    match group.world() {
        1 => String::new(),
        n => format!("rank {} of {n}: ", group.rank()),
    }
}
