//! `summary.csv`: each setting of a sweep (its values on every axis but `seed`) over its finished
//! seeds: the mean and the lowest and highest seed of kNN and linear top-1, and the mean training
//! time: whether two settings differ by more than their seeds do, without a spreadsheet (with
//! two or three seeds a rough guide, not a significance test).

use std::fmt::Write as _;

use super::report::{field, number, PointResult, SweepResults};
use super::{value_text, Point, PointState};

const SUMMARY_COLUMNS: [&str; 9] = [
    "seeds_done",
    "seeds",
    "knn_mean",
    "knn_min",
    "knn_max",
    "linear_mean",
    "linear_min",
    "linear_max",
    "train_seconds_mean",
];

/// The finished points that differ only in `seed`.
pub struct Setting<'a> {
    pub values: Vec<(String, toml::Value)>,
    pub done: Vec<&'a PointResult>,
    /// Points in the grid for this setting, finished or not.
    pub of: usize,
}

/// Mean, lowest and highest of a metric over a setting's finished seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Setting<'_> {
    pub fn label(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect();
        match parts.is_empty() {
            true => "(seeds only)".into(),
            false => parts.join(", "),
        }
    }

    pub fn spread(&self, metric: impl Fn(&PointResult) -> Option<f64>) -> Option<Spread> {
        let values: Vec<f64> = self.done.iter().filter_map(|p| metric(p)).collect();
        (!values.is_empty()).then(|| Spread {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    fn train_seconds(&self) -> Option<f64> {
        let seconds = |p: &PointResult| p.epochs.last().map(|e| e.train_seconds);
        self.spread(seconds).map(|s| s.mean)
    }
}

impl SweepResults {
    /// The points grouped by their values on every axis but `seed` and `skip` (those values as
    /// a point of the smaller grid), in grid order.
    pub(crate) fn by_setting(&self, skip: &[&str]) -> Vec<(Point, Vec<&PointResult>)> {
        let mut out: Vec<(Point, Vec<&PointResult>)> = Vec::new();
        for p in &self.points {
            let values = (p.point.values.iter())
                .filter(|(k, _)| k != "seed" && !skip.contains(&k.as_str()))
                .cloned()
                .collect();
            let setting = Point { values };
            match out.iter_mut().find(|(s, _)| *s == setting) {
                Some((_, members)) => members.push(p),
                None => out.push((setting, vec![p])),
            }
        }
        // In order of first appearance, a value that an exclude keeps from the first points
        // (λ 0.000125, pdim 8192 only) would come last instead of in its place on the axis.
        out.sort_by_cached_key(|(setting, _)| self.sweep.grid_position(setting));
        out
    }

    /// The sweep's settings in grid order.
    pub fn settings(&self) -> Vec<Setting<'_>> {
        let settings = self.by_setting(&[]).into_iter();
        settings
            .map(|(setting, members)| Setting {
                values: setting.values,
                of: members.len(),
                done: (members.into_iter())
                    .filter(|p| p.state == PointState::Done)
                    .collect(),
            })
            .collect()
    }

    pub fn summary_csv(&self) -> String {
        let axes = (self.sweep.axes.iter()).filter(|a| a.key != "seed");
        let mut columns: Vec<String> = axes.map(|a| field(&a.key)).collect();
        columns.extend(SUMMARY_COLUMNS.map(String::from));
        let mut out = columns.join(",") + "\n";
        for s in self.settings() {
            let mut fields: Vec<String> = s
                .values
                .iter()
                .map(|(_, v)| field(&value_text(v)))
                .collect();
            fields.extend([s.done.len().to_string(), s.of.to_string()]);
            out.push_str(&fields.join(","));
            for metric in [PointResult::knn_final, |p: &PointResult| p.linear_top1] {
                let spread = s.spread(metric);
                for v in [
                    spread.map(|s| s.mean),
                    spread.map(|s| s.min),
                    spread.map(|s| s.max),
                ] {
                    let _ = write!(out, ",{}", number(v));
                }
            }
            let seconds = s
                .train_seconds()
                .map_or(String::new(), |t| format!("{t:.1}"));
            let _ = writeln!(out, ",{seconds}");
        }
        out
    }

    /// The settings as a text table (percent), for the end of `ssl-sweep run` and `report`.
    pub fn write_summary(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |s: Option<Spread>| match s {
            None => "-".to_string(),
            Some(s) if s.min == s.max => format!("{:.2}", 100.0 * s.mean),
            Some(s) => format!(
                "{:.2} ({:.2}-{:.2})",
                100.0 * s.mean,
                100.0 * s.min,
                100.0 * s.max
            ),
        };
        writeln!(
            f,
            "{:<40} {:>5} {:>21} {:>21}",
            "setting (over seeds)", "seeds", "kNN mean (range)", "linear mean (range)"
        )?;
        for s in self.settings() {
            writeln!(
                f,
                "{:<40} {:>5} {:>21} {:>21}",
                s.label(),
                format!("{}/{}", s.done.len(), s.of),
                pct(s.spread(PointResult::knn_final)),
                pct(s.spread(|p| p.linear_top1))
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::EpochResult;
    use crate::sweep::{Axis, Point, SweepConfig};

    fn point(seed: i64, pdim: i64, knn: f64, linear: Option<f64>) -> PointResult {
        PointResult {
            point: Point {
                values: vec![
                    ("seed".into(), toml::Value::Integer(seed)),
                    ("pdim".into(), toml::Value::Integer(pdim)),
                ],
            },
            state: match linear {
                Some(_) => PointState::Done,
                None => PointState::Trained,
            },
            knn_random_init: Some(0.3),
            epochs: vec![EpochResult {
                epoch: 1,
                train_seconds: 100.0 * seed as f64 + 50.0,
                knn: Some(knn),
                loss: Some(1.0),
            }],
            linear_top1: linear,
        }
    }

    #[test]
    fn settings_pool_the_finished_seeds_only() {
        let axes = [("seed", [0, 1]), ("pdim", [64, 256])].map(|(key, v)| Axis {
            key: key.into(),
            values: v.map(toml::Value::Integer).to_vec(),
        });
        let results = SweepResults {
            sweep: SweepConfig {
                title: String::new(),
                base: toml::Table::new(),
                axes: axes.to_vec(),
                probe: true,
                exclude: vec![],
            },
            points: vec![
                point(0, 64, 0.40, Some(0.45)),
                point(0, 256, 0.42, Some(0.48)),
                point(1, 64, 0.44, Some(0.47)),
                point(1, 256, 0.90, None),
            ],
        };
        let csv = results.summary_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "pdim,seeds_done,seeds,knn_mean,knn_min,knn_max,linear_mean,linear_min,linear_max,train_seconds_mean");
        assert_eq!(
            lines[1],
            "64,2,2,0.420000,0.400000,0.440000,0.460000,0.450000,0.470000,100.0"
        );
        // Seed 1 of pdim 256 is trained but not probed: it is left out, not averaged in.
        assert_eq!(
            lines[2],
            "256,1,2,0.420000,0.420000,0.420000,0.480000,0.480000,0.480000,50.0"
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn a_sweep_over_seeds_alone_keeps_its_columns_aligned() {
        let mut results = SweepResults {
            sweep: SweepConfig {
                title: String::new(),
                base: toml::Table::new(),
                axes: vec![Axis {
                    key: "seed".into(),
                    values: vec![toml::Value::Integer(0), toml::Value::Integer(1)],
                }],
                probe: true,
                exclude: vec![],
            },
            points: vec![point(0, 64, 0.40, Some(0.45)), point(1, 64, 0.44, None)],
        };
        for p in &mut results.points {
            p.point.values.retain(|(k, _)| k == "seed");
        }
        let csv = results.summary_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], SUMMARY_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "1,2,0.400000,0.400000,0.400000,0.450000,0.450000,0.450000,50.0"
        );
        assert_eq!(results.settings()[0].label(), "(seeds only)");
    }

    #[test]
    fn settings_follow_the_axis_order_when_an_exclude_hides_a_value_at_first() {
        let float = toml::Value::Float;
        let axes = vec![
            Axis {
                key: "pdim".into(),
                values: vec![toml::Value::Integer(64), toml::Value::Integer(8192)],
            },
            Axis {
                key: "lambda".into(),
                values: vec![float(0.000125), float(0.0005)],
            },
        ];
        let exclude = toml::toml! { pdim = 64
        lambda = 0.000125 };
        let sweep = SweepConfig {
            title: String::new(),
            base: toml::Table::new(),
            axes,
            probe: true,
            exclude: vec![exclude],
        };
        let points = (sweep.points().into_iter())
            .map(|p| PointResult {
                point: p,
                ..point(0, 0, 0.4, Some(0.45))
            })
            .collect();
        let results = SweepResults { sweep, points };
        let lambdas: Vec<String> = (results.by_setting(&["pdim"]).iter())
            .map(|(setting, _)| value_text(setting.get("lambda").unwrap()))
            .collect();
        assert_eq!(lambdas, ["0.000125", "0.0005"]);
    }
}
