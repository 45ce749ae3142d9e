//! Who started this process: the ranks a launcher (`mpirun`/`mpiexec`, `srun`, `torchrun`)
//! describes in the environment, and `ssl-train --nproc N`, which starts N local ranks under
//! `mpirun` (as `torchrun --nproc_per_node N` does with its own agent).

use std::ffi::OsString;
use std::process::Command;

use super::DistError;

/// This process's place in a launched group, as its launcher's environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: &'static str,
    pub rank: usize,
    pub world: usize,
    /// Ranks on this machine, which share its cores.
    pub local_world: usize,
}

impl Launch {
    /// Whether an MPI engine can form this group (its launcher wired MPI up).
    pub fn mpi_wired(&self) -> bool {
        self.launcher != "torchrun"
    }
}

/// The launcher's description of this process, if one started it; the first launcher found in
/// the order Open MPI, MPICH (Hydra), an `srun` step, torchrun.
pub fn detect(env: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistError> {
    let number = |key: &str| -> Result<Option<usize>, DistError> {
        match env(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| DistError::Env {
                key: key.to_string(),
                value: v,
            }),
        }
    };
    let launchers: [(&'static str, [&str; 3]); 4] = [
        (
            "mpirun",
            [
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_SIZE",
            ],
        ),
        ("mpiexec", ["PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"]),
        // A batch script's own environment has SLURM_NTASKS for the whole allocation; only an
        // `srun` step sets the step's task count.
        (
            "srun",
            [
                "SLURM_PROCID",
                "SLURM_STEP_NUM_TASKS",
                "SLURM_STEP_TASKS_PER_NODE",
            ],
        ),
        ("torchrun", ["RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"]),
    ];
    for (launcher, [rank_key, world_key, local_key]) in launchers {
        let (Some(rank), Some(world)) = (number(rank_key)?, number(world_key)?) else {
            continue;
        };
        if world == 0 || rank >= world {
            return Err(DistError::Env {
                key: rank_key.to_string(),
                value: format!("{rank} of {world_key}={world}"),
            });
        }
        // SLURM writes tasks per node as "2(x3)" or "2,1": the first count is this shape's.
        let local = env(local_key)
            .and_then(|v| v.split(['(', ',']).next()?.trim().parse().ok())
            .unwrap_or(world);
        return Ok(Some(Launch {
            launcher,
            rank,
            world,
            local_world: local.clamp(1, world),
        }));
    }
    Ok(None)
}

/// Re-runs this command as `nproc` local ranks under `mpirun` (`$SSL_MPIRUN` if set), in place
/// of this process, so signals reach `mpirun` and a launcher killed with SIGKILL leaves no
/// ranks behind. Each rank gets its share of the cores; waiting ranks yield the CPU instead of
/// polling. Returns only on failure.
pub fn exec_mpirun(nproc: usize, args: &[OsString]) -> DistError {
    use std::os::unix::process::CommandExt;
    let mpirun = std::env::var_os("SSL_MPIRUN").unwrap_or_else(|| "mpirun".into());
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return DistError::Launch(format!("cannot find this program: {e}")),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads =
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| (cores / nproc).max(1).to_string());
    let mut cmd = Command::new(&mpirun);
    cmd.args([
        "-np",
        &nproc.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .args(["--mca", "mpi_yield_when_idle", "1"])
    .args(["-x", &format!("RAYON_NUM_THREADS={threads}")]);
    // Open MPI refuses root without it; containers and CI machines often run as root.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd.arg(exe).args(args);
    let error = cmd.exec();
    let name = std::path::Path::new(&mpirun).display().to_string();
    DistError::Launch(match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "`{name}` not found: --nproc starts its ranks with Open MPI's mpirun (Debian/Ubuntu: \
             apt-get install openmpi-bin libopenmpi-dev)"
        ),
        _ => format!("cannot run `{name}`: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    /// An environment and the (launcher, rank, world, local world) it describes.
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        Option<(&'a str, usize, usize, usize)>,
    );

    #[test]
    fn launchers_are_recognised() {
        let cases: &[Case] = &[
            (&[], None),
            (
                &[
                    ("OMPI_COMM_WORLD_RANK", "1"),
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                ],
                Some(("mpirun", 1, 4, 2)),
            ),
            (
                &[("PMI_RANK", "0"), ("PMI_SIZE", "2")],
                Some(("mpiexec", 0, 2, 2)),
            ),
            (
                &[
                    ("SLURM_PROCID", "3"),
                    ("SLURM_STEP_NUM_TASKS", "8"),
                    ("SLURM_STEP_TASKS_PER_NODE", "4(x2)"),
                ],
                Some(("srun", 3, 8, 4)),
            ),
            // A batch script: the allocation's task count is not a launched group.
            (&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")], None),
            (
                &[
                    ("RANK", "1"),
                    ("WORLD_SIZE", "2"),
                    ("LOCAL_WORLD_SIZE", "2"),
                ],
                Some(("torchrun", 1, 2, 2)),
            ),
        ];
        for (pairs, want) in cases {
            let got = detect(env(pairs)).unwrap();
            let got = got.map(|l| (l.launcher, l.rank, l.world, l.local_world));
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    #[test]
    fn nonsense_is_named() {
        let bad = [("OMPI_COMM_WORLD_RANK", "x"), ("OMPI_COMM_WORLD_SIZE", "2")];
        let err = detect(env(&bad)).unwrap_err().to_string();
        assert!(
            err.contains("OMPI_COMM_WORLD_RANK") && err.contains("`x`"),
            "{err}"
        );
        let past = [("RANK", "2"), ("WORLD_SIZE", "2")];
        let err = detect(env(&past)).unwrap_err().to_string();
        assert!(err.contains("RANK"), "{err}");
    }
}
