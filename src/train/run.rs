//! What `ssl-train` runs, resolved in one place: the base config (a file, a resumed run's own,
//! the paper's defaults when a dataset is named, else the built-in run), `--set` overrides on
//! top, a fresh run directory for the built-in run, and the built-in dataset packed on first use.
//! A resume is checked here against the checkpoint's config as a whole.

use std::path::{Path, PathBuf};

use super::config::TrainConfig;
use super::{checkpoint, TrainError, CONFIG_FILE};
use crate::loader::{ViewSpec, ViewSpecError};
use crate::pack::{PackConfig, SourceFormat};

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    /// A TOML config file.
    pub config: Option<PathBuf>,
    /// A packed dataset (the same as `--set data=DIR`).
    pub data: Option<PathBuf>,
    /// The run directory (the same as `--set out=DIR`).
    pub out: Option<PathBuf>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
    /// `key=value` overrides.
    pub sets: Vec<String>,
}

/// A run ready to train: its config and the dataset it reads.
#[derive(Debug, Clone)]
pub struct Run {
    pub config: TrainConfig,
    /// `config.data`, or the built-in shapes packed into a temporary directory.
    pub data: PathBuf,
    pub resume: bool,
}

/// Keys a resumed run may change: how long, where and how fast it runs, how it is watched, and
/// its learning rate (continuing at a lower one is a common, deliberate choice). Any other change
/// (data, views, model, loss, optimiser, augmentations, seed) would not continue the
/// checkpoint's run, so it is refused by name.
pub const RESUMABLE_CHANGES: &[&str] = &[
    "epochs",
    "lr",
    "out",
    "threads",
    "prefetch",
    "cache",
    "decoded_cache_bytes",
    "verify_checksums",
    "device",
    "checkpoint_every",
    "eval_split",
    "knn_every",
    "knn_k",
    "knn_temperature",
    "knn_bank",
    "eval_size",
];

impl Run {
    /// Resolves the command line into a run (see the module docs for the order of precedence).
    pub fn resolve(args: RunArgs) -> Result<Self, TrainError> {
        // A path becomes TOML text below; one that is not UTF-8 would silently become another.
        for (key, path) in [
            ("data", &args.data),
            ("out", &args.out),
            ("resume", &args.resume),
        ] {
            if let Some(path) = path.as_ref().filter(|p| p.to_str().is_none()) {
                return Err(crate::config::ConfigError::OutOfRange {
                    key: key.into(),
                    value: path.display().to_string(),
                    allowed: "must be a path in valid UTF-8".into(),
                }
                .into());
            }
        }
        let mut sets = args.sets;
        if let Some(data) = &args.data {
            sets.push(format!("data={}", toml_string(data)));
        }
        if let Some(out) = args.resume.as_ref().or(args.out.as_ref()) {
            sets.push(format!("out={}", toml_string(out)));
        }
        let base = match (&args.config, &args.resume) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(run)) => Some(run.join(CONFIG_FILE)),
            (None, None) => None,
        };
        // Without a config file, the built-in shapes run is the base unless a dataset is named;
        // then the defaults are the paper's (ResNet-18, pdim 256, Adam 1e-3).
        let names_data = sets.iter().any(|s| s.starts_with("data="));
        let mut config = match &base {
            Some(path) => crate::config::load(Some(path), &sets)?,
            None if names_data => crate::config::apply_sets(&TrainConfig::default(), &sets)?,
            None => crate::config::apply_sets(&TrainConfig::builtin(), &sets)?,
        };
        if base.is_none() && !sets.iter().any(|s| s.starts_with("out=")) {
            config.out = fresh_run_dir(&config.out);
        }
        Self::new(config, args.resume.is_some())
    }

    /// `config` as it is, its dataset resolved.
    pub fn new(config: TrainConfig, resume: bool) -> Result<Self, TrainError> {
        config.check()?;
        let data = resolve_data(&config)?;
        Ok(Self {
            config,
            data,
            resume,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.config.out
    }

    /// The side of the run's largest view.
    pub fn largest_view(&self) -> Result<u32, ViewSpecError> {
        Ok(self.config.loader.views.parse::<ViewSpec>()?.largest_side())
    }
}

/// Call before `dist::start`: when it will re-run this command as `nproc` ranks, settles once the
/// run directory they must share (resolving it also packs the built-in data, which the ranks
/// would otherwise race to do) and appends it to `args` as `--out`. Nothing to do when no
/// launch follows or the user named the directory (`--out`, `--resume`).
pub fn settle_run_dir(
    nproc: usize,
    run: RunArgs,
    args: &mut Vec<std::ffi::OsString>,
) -> Result<(), TrainError> {
    if !crate::dist::will_launch(nproc)? || run.out.is_some() || run.resume.is_some() {
        return Ok(());
    }
    let run = Run::resolve(run)?;
    args.extend(["--out".into(), run.dir().as_os_str().to_owned()]);
    Ok(())
}

/// The dataset to train on: `cfg.data`, or the built-in shapes packed once into a temp dir.
fn resolve_data(cfg: &TrainConfig) -> Result<PathBuf, TrainError> {
    if !cfg.loader.data.as_os_str().is_empty() {
        return Ok(cfg.loader.data.clone());
    }
    let seed = cfg.loader.seed;
    let dir = std::env::temp_dir().join(format!("ssl-train-builtin-shapes-{seed}"));
    if !dir.join(crate::shard::manifest::MANIFEST_FILE).is_file() {
        let pack = PackConfig {
            source: "builtin-shapes".into(),
            out: dir.clone(),
            format: Some(SourceFormat::BuiltinShapes),
            overwrite: true,
            seed,
            ..PackConfig::default()
        };
        crate::pack::write_dataset(&pack)?;
    }
    Ok(dir)
}

/// Refuses a resume whose config differs from the checkpoint's in anything but
/// [`RESUMABLE_CHANGES`], naming each changed key.
pub fn check_resumable(cfg: &TrainConfig, run: &Path) -> Result<(), TrainError> {
    let path = checkpoint::checkpoint_dir(run).join(CONFIG_FILE);
    let unreadable = |message: String| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("unreadable config: {message}"),
    };
    let saved_text = checkpoint::load_config_text(run)?;
    let saved: TrainConfig = crate::config::from_toml(&saved_text, &path.display().to_string())
        .map_err(|e| unreadable(e.to_string()))?;
    let table = |c: &TrainConfig| toml::Table::try_from(c).map_err(|e| unreadable(e.to_string()));
    let mut changes = Vec::new();
    diff_tables(&table(&saved)?, &table(cfg)?, "", &mut changes);
    changes.retain(|(key, _)| !RESUMABLE_CHANGES.contains(&key.as_str()));
    if changes.is_empty() {
        return Ok(());
    }
    Err(TrainError::NotResumable {
        run: run.to_path_buf(),
        changes: changes
            .iter()
            .map(|(_, change)| change.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every dotted key whose value differs between `old` and `new`, with "key old -> new".
fn diff_tables(
    old: &toml::Table,
    new: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = format!("{prefix}{key}");
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                diff_tables(a, b, &format!("{path}."), out)
            }
            (a, b) if a != b => {
                let show = |v: Option<&toml::Value>| v.map_or("(unset)".into(), |v| v.to_string());
                out.push((path.clone(), format!("{path} {} -> {}", show(a), show(b))));
            }
            _ => {}
        }
    }
}

/// `dir`, or `dir-2`, `dir-3`, ... whichever does not exist yet: running the built-in default
/// again starts a new run instead of refusing to touch the previous one.
fn fresh_run_dir(dir: &Path) -> PathBuf {
    let mut candidate = dir.to_path_buf();
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{}-{n}", dir.display()));
    }
    candidate
}

/// A path as a TOML string literal.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
