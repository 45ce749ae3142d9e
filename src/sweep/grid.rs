//! The sweep file: a base config, axes whose product is the grid, and exclude entries that
//! leave points out of it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{io, run_dir, SweepError, SWEEP_FILE};
use crate::train::TrainConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// What the sweep measures, for titles.
    #[serde(default)]
    pub title: String,
    /// `ssl-train` keys every point shares, as in a `configs/*.toml` file.
    #[serde(default)]
    pub base: toml::Table,
    /// The grid: points are the product of the axes, the last varying fastest.
    pub axes: Vec<Axis>,
    /// Probe each finished point linearly (fast protocol: centre views, 20 epochs).
    #[serde(default = "yes")]
    pub probe: bool,
    /// Points left out of the grid: each entry names axis values, and a point that has all of
    /// them is not run (`{ pdim = 8192, lambda = 0.5 }`: a λ far from that width's optimum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<toml::Table>,
}

fn yes() -> bool {
    true
}

/// One axis of the grid: an `ssl-train` key and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub key: String,
    pub values: Vec<toml::Value>,
}

/// One point of the grid: a value per axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub values: Vec<(String, toml::Value)>,
}

impl Point {
    /// The point as `--set` overrides: `key=value`, values as TOML literals.
    pub fn sets(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// Its run directory's name: `pdim-64_seed-0`, anything but `[A-Za-z0-9.-]` in a value
    /// replaced by `_`.
    pub fn name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(
                    |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                        true => c,
                        false => '_',
                    },
                )
                .collect()
        };
        self.values
            .iter()
            .map(|(k, v)| format!("{}-{}", clean(k), clean(&value_text(v))))
            .collect::<Vec<_>>()
            .join("_")
    }

    /// The value of `key` on this point, if it is an axis.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl SweepConfig {
    /// Reads a sweep file; `sets` override keys of its base (`--set epochs=2`).
    pub fn load(path: &Path, sets: &[String]) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let invalid = |problem: String| SweepError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut sweep: SweepConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if !sets.is_empty() {
            let base = sweep.base_config().map_err(&invalid)?;
            let base = crate::config::apply_sets_to(&base, "[base]", sets)
                .map_err(|e| invalid(e.to_string()))?;
            sweep.base = toml::Table::try_from(&base).map_err(|e| invalid(e.to_string()))?;
        }
        sweep.check().map_err(invalid)?;
        Ok(sweep)
    }

    /// The base as an `ssl-train` config.
    pub fn base_config(&self) -> Result<TrainConfig, String> {
        let text = toml::to_string(&self.base).map_err(|e| e.to_string())?;
        crate::config::from_toml(&text, "[base]").map_err(|e| e.to_string())
    }

    /// Every point's config must parse, and names must not collide.
    fn check(&self) -> Result<(), String> {
        if self.axes.is_empty() || self.axes.iter().any(|a| a.values.is_empty()) {
            return Err("a sweep needs at least one axis, each with at least one value".into());
        }
        let base = self.base_config()?;
        let mut names = std::collections::BTreeSet::new();
        for point in self.points() {
            let origin = format!("[base] at point {}", point.name());
            crate::config::apply_sets_to(&base, &origin, &point.sets())
                .map_err(|e| e.to_string())?;
            if !names.insert(point.name()) {
                return Err(format!(
                    "two points share the directory name {}",
                    point.name()
                ));
            }
        }
        self.check_exclude()
    }

    /// An exclude entry that matches nothing (a misspelt key, `1` for `1.0`) would silently run
    /// the points it was meant to drop, so each must name values the axes take.
    fn check_exclude(&self) -> Result<(), String> {
        for (i, entry) in self.exclude.iter().enumerate() {
            let at = format!("exclude entry {}", i + 1);
            if entry.is_empty() {
                return Err(format!("{at} names no axis value"));
            }
            for (key, value) in entry {
                let Some(axis) = self.axes.iter().find(|a| &a.key == key) else {
                    let keys: Vec<&str> = self.axes.iter().map(|a| a.key.as_str()).collect();
                    return Err(format!("{at}: {key} is not an axis (axes: {keys:?})"));
                };
                if !axis.values.contains(value) {
                    let values: Vec<String> = axis.values.iter().map(value_text).collect();
                    return Err(format!(
                        "{at}: {key} = {value} is not one of its values {values:?}"
                    ));
                }
            }
        }
        if self.points().is_empty() {
            return Err("the exclude entries leave no point".into());
        }
        Ok(())
    }

    fn excluded(&self, point: &Point) -> bool {
        let matches = |entry: &toml::Table| entry.iter().all(|(k, v)| point.get(k) == Some(v));
        self.exclude.iter().any(matches)
    }

    /// The grid's points, the last axis varying fastest.
    pub fn points(&self) -> Vec<Point> {
        let mut points = vec![Point { values: Vec::new() }];
        for axis in &self.axes {
            points = points
                .into_iter()
                .flat_map(|p| {
                    axis.values.iter().map(move |v| {
                        let mut values = p.values.clone();
                        values.push((axis.key.clone(), v.clone()));
                        Point { values }
                    })
                })
                .collect();
        }
        points.retain(|p| !self.excluded(p));
        points
    }

    /// Where `point` (or a setting: a point with some axes left out) sits in the grid: the
    /// index of its value on each axis it has, so sorting by it gives the grid's order.
    pub fn grid_position(&self, point: &Point) -> Vec<usize> {
        // An axis the setting leaves out counts as one value for all, so the keys stay aligned.
        let position = |axis: &Axis| match point.get(&axis.key) {
            Some(value) => axis
                .values
                .iter()
                .position(|v| v == value)
                .unwrap_or(usize::MAX),
            None => 0,
        };
        self.axes.iter().map(position).collect()
    }

    /// The `ssl-train` config of `point`, its run directory under `dir`.
    pub fn point_config(&self, point: &Point, dir: &Path) -> Result<TrainConfig, SweepError> {
        let invalid = |problem: String| SweepError::Invalid {
            path: dir.join(SWEEP_FILE),
            problem: format!("point {}: {problem}", point.name()),
        };
        let base = self.base_config().map_err(invalid)?;
        let mut sets = point.sets();
        let out = run_dir(dir, point);
        sets.push(format!(
            "out={}",
            toml::Value::String(out.display().to_string())
        ));
        crate::config::apply_sets_to(&base, "[base]", &sets).map_err(|e| invalid(e.to_string()))
    }
}

/// An axis value as people read it: strings without their quotes, numbers as written.
pub fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sweeps_load_with_the_point_counts_they_state() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps");
        let expected = [
            ("cpu/pdim-lambda.toml", 32),
            ("cpu/views.toml", 8),
            ("cpu/fraction.toml", 18),
            ("paper/pdim-lambda.toml", 120),
            ("paper/views.toml", 12),
            ("paper/fraction.toml", 27),
        ];
        for (file, points) in expected {
            let path = root.join(file);
            let sweep = SweepConfig::load(&path, &[]).unwrap();
            assert_eq!(sweep.points().len(), points, "{file}");
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.contains(&format!("= {points} runs")),
                "{file} states its size"
            );
        }
    }

    #[test]
    fn points_vary_the_last_axis_fastest_and_name_their_directories() {
        let sweep: SweepConfig = toml::from_str(
            "[[axes]]\nkey = \"views\"\nvalues = [\"2x32\", \"2x32:0.14-1,6x16\"]\n\
             [[axes]]\nkey = \"seed\"\nvalues = [0, 1]\n",
        )
        .unwrap();
        let names: Vec<String> = sweep.points().iter().map(Point::name).collect();
        assert_eq!(
            names,
            [
                "views-2x32_seed-0",
                "views-2x32_seed-1",
                "views-2x32_0.14-1_6x16_seed-0",
                "views-2x32_0.14-1_6x16_seed-1"
            ]
        );
        assert_eq!(
            sweep.points()[2].sets(),
            ["views=\"2x32:0.14-1,6x16\"", "seed=0"]
        );
    }

    #[test]
    fn exclude_drops_the_points_matching_all_its_values_and_must_name_axis_values() {
        let grid = "[[axes]]\nkey = \"pdim\"\nvalues = [64, 8192]\n\
                    [[axes]]\nkey = \"lambda\"\nvalues = [0.001, 0.5]\n";
        let sweep = |exclude: &str| toml::from_str::<SweepConfig>(&format!("{grid}{exclude}"));
        let kept = sweep("[[exclude]]\npdim = 8192\nlambda = 0.5\n").unwrap();
        let names: Vec<String> = kept.points().iter().map(Point::name).collect();
        assert_eq!(
            names,
            [
                "pdim-64_lambda-0.001",
                "pdim-64_lambda-0.5",
                "pdim-8192_lambda-0.001"
            ]
        );
        assert!(kept.check().is_ok());
        for (exclude, needle) in [
            ("[[exclude]]\npdmi = 8192\n", "pdmi is not an axis"),
            (
                "[[exclude]]\nlambda = 1\n",
                "lambda = 1 is not one of its values",
            ),
            ("[[exclude]]\n", "names no axis value"),
            (
                "[[exclude]]\nlambda = 0.5\n[[exclude]]\nlambda = 0.001\n",
                "leave no point",
            ),
        ] {
            let err = sweep(exclude).unwrap().check().unwrap_err();
            assert!(err.contains(needle), "{exclude}: {err}");
        }
    }
}
