//! The TOML and `--set` machinery every binary shares: read a config file (or start from a
//! default), apply `key=value` overrides by their TOML names, and deserialize into the caller's
//! config type. The types themselves belong to their modules (`pack::PackConfig`,
//! `loader::LoaderConfig`, `train::TrainConfig`, ...); this module imports nothing from the crate.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

/// A config file or override that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("--set {0}: expected key=value, e.g. --set views=4x16")]
    BadSet(String),
    /// A value of the right type outside what its key allows.
    #[error("`{key}` = {value}: {allowed}")]
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
    },
}

/// The range checks config types run once, where they are read, so that a bad value is named
/// by its key instead of failing (or silently misbehaving) deep inside a worker.
pub mod check {
    use super::ConfigError;

    fn refuse(key: &str, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
        ConfigError::OutOfRange {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// An `f32` as the `f64` its shortest text reads as, so errors show `0.1`, not
    /// `0.10000000149011612`.
    pub fn wide(x: f32) -> f64 {
        x.to_string().parse().unwrap_or(f64::NAN)
    }

    /// `lo <= v <= hi`, finite.
    pub fn within(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
        match v.is_finite() && (lo..=hi).contains(&v) {
            true => Ok(()),
            false => Err(refuse(key, v, &format!("must be in [{lo}, {hi}]"))),
        }
    }

    /// `v > 0`, finite.
    pub fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
        match v.is_finite() && v > 0.0 {
            true => Ok(()),
            false => Err(refuse(key, v, "must be a finite number above 0")),
        }
    }

    /// `v >= 0`, finite.
    pub fn non_negative(key: &str, v: f64) -> Result<(), ConfigError> {
        match v.is_finite() && v >= 0.0 {
            true => Ok(()),
            false => Err(refuse(key, v, "must be a finite number, 0 or above")),
        }
    }

    /// An integer count of at least `lo`.
    pub fn at_least(key: &str, v: u64, lo: u64) -> Result<(), ConfigError> {
        match v >= lo {
            true => Ok(()),
            false => Err(refuse(key, v, &format!("must be at least {lo}"))),
        }
    }

    /// A range `[a, b]` with `0 < a <= b` (`0 <= a` when `zero_ok`), both finite.
    pub fn range(key: &str, (a, b): (f64, f64), zero_ok: bool) -> Result<(), ConfigError> {
        let low_ok = if zero_ok { a >= 0.0 } else { a > 0.0 };
        match a.is_finite() && b.is_finite() && low_ok && a <= b {
            true => Ok(()),
            false => Err(refuse(
                key,
                format!("[{a}, {b}]"),
                &format!(
                    "must be [lo, hi] with {} lo <= hi, both finite",
                    if zero_ok { "0 <=" } else { "0 <" }
                ),
            )),
        }
    }
}

/// Applies `key=value` overrides to an existing config (see [`load`]); errors name it the
/// built-in default.
pub fn apply_sets<T: Serialize + DeserializeOwned>(
    cfg: &T,
    sets: &[String],
) -> Result<T, ConfigError> {
    apply_sets_to(cfg, "built-in default", sets)
}

/// [`apply_sets`] on a config that errors call `origin`.
pub fn apply_sets_to<T: Serialize + DeserializeOwned>(
    cfg: &T,
    origin: &str,
    sets: &[String],
) -> Result<T, ConfigError> {
    let table = toml::Table::try_from(cfg).map_err(|e| ConfigError::Invalid {
        origin: origin.into(),
        message: e.to_string(),
    })?;
    apply_to_table(table, origin.into(), sets)
}

/// Reads a TOML config (or starts from `T::default()`), then applies `key=value` overrides whose
/// keys are the TOML names (dotted for nested tables: `augment.hue=0`). Values parse as TOML
/// (`4`, `0.5`, `true`, `[0.1, 2.0]`) and fall back to strings (`views=4x16`).
pub fn load<T: Serialize + DeserializeOwned>(
    path: Option<&Path>,
    sets: &[String],
) -> Result<T, ConfigError> {
    let (table, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|error| ConfigError::Read {
                path: p.to_path_buf(),
                error,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: p.display().to_string(),
                message: e.to_string(),
            })?;
            (table, p.display().to_string())
        }
        None => (toml::Table::new(), "defaults".to_string()),
    };
    apply_to_table(table, origin, sets)
}

/// Parses a whole config from TOML text, with the same unknown-key check as [`load`].
pub fn from_toml<T: Serialize + DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        origin: origin.to_string(),
        message: e.to_string(),
    })?;
    apply_to_table(table, origin.to_string(), &[])
}

fn apply_to_table<T: Serialize + DeserializeOwned>(
    mut table: toml::Table,
    origin: String,
    sets: &[String],
) -> Result<T, ConfigError> {
    for set in sets {
        apply_set(&mut table, set)?;
    }
    let origin = if sets.is_empty() {
        origin
    } else {
        format!("{origin} with --set {}", sets.join(" --set "))
    };
    let invalid = |message: String| ConfigError::Invalid {
        origin: origin.clone(),
        message,
    };
    let cfg = T::deserialize(table.clone()).map_err(|e| invalid(e.to_string()))?;
    // Config types nest their modules' configs with `#[serde(flatten)]`, which serde cannot
    // combine with `deny_unknown_fields`; a key the resolved config does not serialise back is
    // one it did not read, so a typo still fails, by name.
    let resolved = toml::Table::try_from(&cfg).map_err(|e| invalid(e.to_string()))?;
    if let Some(key) = unknown_key(&table, &resolved, "") {
        return Err(invalid(format!("unknown field `{key}`")));
    }
    Ok(cfg)
}

fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadSet(set.to_string());
    let (key, value) = set.split_once('=').ok_or_else(bad)?;
    // TOML reads `0x32` as the integer 50; nobody means hexadecimal on a command line, and
    // `views=0x32` is a view spec (zero views), so such values stay text for their key to judge.
    let radix = ["0x", "0o", "0b", "+0x", "-0x"]
        .iter()
        .any(|p| value.trim().to_ascii_lowercase().starts_with(p));
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .filter(|_| !radix)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().ok_or_else(bad)?;
    let mut node = table;
    for part in parts {
        node = node
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(bad)?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

/// The first key (dotted) of `input` that `resolved` lacks.
fn unknown_key(input: &toml::Table, resolved: &toml::Table, prefix: &str) -> Option<String> {
    input.iter().find_map(|(key, value)| {
        let path = format!("{prefix}{key}");
        match (value, resolved.get(key)) {
            (_, None) => Some(path),
            (toml::Value::Table(inner), Some(toml::Value::Table(known))) => {
                unknown_key(inner, known, &format!("{path}."))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        hue: f32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Outer {
        views: String,
        lambda: Option<f64>,
        #[serde(flatten)]
        flat: Flat,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Flat {
        lr: f64,
        augment: Inner,
    }

    #[test]
    fn sets_override_flat_flattened_and_nested_keys_and_typos_are_named() {
        let sets = ["views=4x16", "lr=0.002", "augment.hue=0.2", "lambda=0.01"].map(String::from);
        let cfg: Outer = load(None, &sets).unwrap();
        assert_eq!(cfg.views, "4x16");
        assert_eq!(cfg.flat.lr, 0.002);
        assert_eq!(cfg.flat.augment.hue, 0.2);
        assert_eq!(cfg.lambda, Some(0.01));
        // A flattened struct's name is no key of its own.
        let typos = [
            ("vews=4x16", "vews"),
            ("augment.heu=0.1", "augment.heu"),
            ("flat.lr=1", "flat"),
        ];
        for (typo, key) in typos {
            let err = load::<Outer>(None, &[typo.into()]).unwrap_err().to_string();
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(from_toml::<Outer>(&text, "t").unwrap(), cfg, "round-trips");
    }

    #[test]
    fn radix_literals_stay_text_and_ranges_name_the_key() {
        let cfg: Outer = load(None, &["views=0x32".into()]).unwrap();
        assert_eq!(cfg.views, "0x32", "not the integer 50");
        let err = load::<Outer>(None, &["lr=0x10".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr"), "{err}");
        let err = check::positive("lr", -1.0).unwrap_err().to_string();
        assert_eq!(err, "`lr` = -1: must be a finite number above 0");
        assert!(check::range("augment.ratio", (2.0, 1.0), false).is_err());
        assert!(check::range("augment.ratio", (0.0, 1.0), false).is_err());
        assert!(check::range("augment.blur_sigma", (0.1, 2.0), false).is_ok());
        assert!(check::within("augment.flip_p", f64::NAN, 0.0, 1.0).is_err());
    }
}
