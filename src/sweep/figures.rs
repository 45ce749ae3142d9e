//! The paper's figures, drawn from whatever axes a sweep has. Points that differ only in `seed`
//! form one line (the mean over seeds; its label counts the seeds behind its thinnest point).
//! - always, `curves.png`: kNN top-1 against epoch and against training time (Fig. 3);
//! - with a `pdim` axis, `pdim.png`: final kNN (and linear) top-1 against pdim, a line per value
//!   of the other axes (λ) and one for the best of them per pdim (Fig. 2);
//! - with `views` and `fraction` axes, `fraction.png`: final kNN against the fraction of the data,
//!   a line per view spec (Fig. 4), and `pareto.png`: error against training time, every line,
//!   and the Pareto frontier of the 2-view lines at all fractions (Fig. 5).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::report::{PointResult, SweepResults};
use super::{value_text, PointState, SweepError};
use crate::plot::{draw_png, Panel, Series};

/// A line: points equal but for the seed.
struct Group<'a> {
    label: String,
    members: Vec<&'a PointResult>,
}

impl Group<'_> {
    fn key(&self, key: &str) -> Option<&toml::Value> {
        self.members.first()?.point.get(key)
    }

    /// The seeds that have trained at least one epoch: a sweep drawn mid-run shows what exists.
    fn started(&self) -> Vec<&PointResult> {
        let started = self.members.iter().filter(|p| Drawn::Epochs.includes(p));
        started.copied().collect()
    }

    /// Per epoch that every started seed reached: (mean training seconds, mean kNN %).
    fn curve(&self) -> Vec<(u64, f64, f64)> {
        let members = self.started();
        let shortest = members.iter().map(|p| p.epochs.len()).min().unwrap_or(0);
        (0..shortest)
            .filter_map(|i| {
                let knn: Vec<f64> = members.iter().filter_map(|p| p.epochs[i].knn).collect();
                let secs: f64 = members.iter().map(|p| p.epochs[i].train_seconds).sum();
                (knn.len() == members.len()).then(|| {
                    let n = members.len() as f64;
                    (
                        members[0].epochs[i].epoch,
                        secs / n,
                        100.0 * knn.iter().sum::<f64>() / n,
                    )
                })
            })
            .collect()
    }

    /// The mean over the seeds that have the value (finished ones, for final numbers).
    fn mean(&self, f: impl Fn(&PointResult) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.members.iter().filter_map(|p| f(p)).collect();
        (!values.is_empty()).then(|| 100.0 * values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// What a figure draws of each point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drawn {
    /// Every epoch so far (curves against epoch or time).
    Epochs,
    /// The final accuracy, so only points that finished training: a run stopped at epoch 2 of 5
    /// would otherwise sit beside finished ones as if it were their equal.
    Final,
}

impl Drawn {
    fn includes(self, p: &PointResult) -> bool {
        match self {
            Drawn::Epochs => !p.epochs.is_empty(),
            Drawn::Final => matches!(p.state, PointState::Trained | PointState::Done),
        }
    }
}

/// Groups points by every axis value except `seed` and those in `skip`, in grid order; a
/// `Drawn::Final` group keeps only its finished points.
fn groups<'a>(results: &'a SweepResults, skip: &[&str], drawn: Drawn) -> Vec<Group<'a>> {
    let settings = results.by_setting(skip).into_iter();
    let mut out: Vec<Group> = settings
        .map(|(setting, members)| {
            let label: Vec<String> = (setting.values.iter())
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect();
            Group {
                label: label.join(", "),
                members,
            }
        })
        .collect();
    for g in &mut out {
        let shown: Vec<&PointResult> = (g.members.iter().copied())
            .filter(|p| drawn.includes(p))
            .collect();
        let (with_data, of) = (fewest_seeds(&shown), seeds(&g.members).len());
        if of > 1 {
            g.label = format!("{} ({with_data} of {of} seeds)", g.label);
        }
        if drawn == Drawn::Final {
            g.members = shown;
        }
    }
    out
}

fn seeds<'a>(members: impl IntoIterator<Item = &'a &'a PointResult>) -> BTreeSet<String> {
    let seeds = members.into_iter().filter_map(|p| p.point.get("seed"));
    seeds.map(value_text).collect()
}

/// The fewest seeds behind any one point of a line, so a half-run sweep does not claim both: a
/// line that spans another axis (pdim.png's λ lines span pdim) may have both seeds at one pdim
/// and one at another.
fn fewest_seeds(shown: &[&PointResult]) -> usize {
    let mut by_point: BTreeMap<Vec<(&str, String)>, Vec<&PointResult>> = BTreeMap::new();
    for p in shown {
        let values = p.point.values.iter().filter(|(k, _)| k != "seed");
        let key = values.map(|(k, v)| (k.as_str(), value_text(v))).collect();
        by_point.entry(key).or_default().push(p);
    }
    by_point.values().map(|m| seeds(m).len()).min().unwrap_or(0)
}

fn has_axis(results: &SweepResults, key: &str) -> bool {
    results.sweep.axes.iter().any(|a| a.key == key)
}

fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// Draws every figure the sweep's axes allow into `dir`.
pub fn draw_all(dir: &Path, results: &SweepResults) -> Result<(), SweepError> {
    draw_png(&dir.join("curves.png"), &curves(results))?;
    if has_axis(results, "pdim") {
        draw_png(&dir.join("pdim.png"), &pdim(results))?;
    }
    if has_axis(results, "views") && has_axis(results, "fraction") {
        draw_png(&dir.join("fraction.png"), &[fraction(results)])?;
        draw_png(&dir.join("pareto.png"), &[pareto(results)])?;
    }
    Ok(())
}

fn curves(results: &SweepResults) -> [Panel; 2] {
    let groups = groups(results, &[], Drawn::Epochs);
    let series = |time: bool| {
        groups
            .iter()
            .map(|g| Series {
                name: g.label.clone(),
                points: g
                    .curve()
                    .into_iter()
                    .map(|(e, s, k)| (if time { s } else { e as f64 }, k))
                    .collect(),
            })
            .collect()
    };
    let title = |what: &str| format!("{} {what}", results.sweep.title).trim().to_string();
    [
        Panel {
            title: title("kNN top-1 by epoch"),
            x_label: "epoch".into(),
            y_label: "kNN top-1 %".into(),
            series: series(false),
            log_x: false,
        },
        Panel {
            title: title("kNN top-1 by training time"),
            x_label: "training seconds".into(),
            y_label: "kNN top-1 %".into(),
            series: series(true),
            log_x: false,
        },
    ]
}

/// Fig. 2: accuracy against pdim, a line per value of the other axes and the best of them.
fn pdim(results: &SweepResults) -> [Panel; 2] {
    let groups = groups(results, &["pdim"], Drawn::Final);
    let panel = |what: &str, f: &dyn Fn(&PointResult) -> Option<f64>| {
        let mut best: BTreeMap<i64, f64> = BTreeMap::new();
        let mut series = Vec::new();
        for line in &groups {
            // Within a line, points differ in pdim (and seed): regroup them by pdim.
            let mut by_pdim: BTreeMap<i64, Vec<&PointResult>> = BTreeMap::new();
            for p in &line.members {
                if let Some(d) = p.point.get("pdim").and_then(number) {
                    by_pdim.entry(d as i64).or_default().push(p);
                }
            }
            let mut points = Vec::new();
            for (d, members) in by_pdim {
                let g = Group {
                    label: String::new(),
                    members,
                };
                if let Some(v) = g.mean(f) {
                    points.push((d as f64, v));
                    let b = best.entry(d).or_insert(v);
                    *b = b.max(v);
                }
            }
            series.push(Series {
                name: line.label.clone(),
                points,
            });
        }
        if groups.len() > 1 {
            // First, so the lines it coincides with are drawn over it.
            let best = best.into_iter().map(|(d, v)| (d as f64, v)).collect();
            series.insert(
                0,
                Series {
                    name: "best per pdim".into(),
                    points: best,
                },
            );
        }
        Panel {
            title: format!("{what} by projector dimension"),
            x_label: "pdim".into(),
            y_label: format!("{what} %"),
            series,
            log_x: true,
        }
    };
    [
        panel("kNN top-1", &|p| p.knn_final()),
        panel("linear top-1", &|p| p.linear_top1),
    ]
}

/// Fig. 4: final kNN against the fraction of the data, a line per view spec.
fn fraction(results: &SweepResults) -> Panel {
    let mut series: Vec<Series> = Vec::new();
    for g in groups(results, &[], Drawn::Final) {
        let (Some(views), Some(frac)) = (
            g.key("views").map(value_text),
            g.key("fraction").and_then(number),
        ) else {
            continue;
        };
        let Some(acc) = g.mean(|p| p.knn_final()) else {
            continue;
        };
        match series.iter_mut().find(|s| s.name == views) {
            Some(s) => s.points.push((frac, acc)),
            None => series.push(Series {
                name: views,
                points: vec![(frac, acc)],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Panel {
        title: "kNN top-1 by fraction of the data".into(),
        x_label: "fraction of the training split".into(),
        y_label: "kNN top-1 %".into(),
        series,
        log_x: false,
    }
}

/// Fig. 5: error against training time for every line, and the frontier of the 2-view lines.
fn pareto(results: &SweepResults) -> Panel {
    let groups = groups(results, &[], Drawn::Epochs);
    let two_views = |g: &Group| {
        g.key("views")
            .map(value_text)
            .and_then(|v| v.parse::<crate::loader::ViewSpec>().ok())
            .is_some_and(|spec| spec.views() == 2)
    };
    let mut series: Vec<Series> = groups
        .iter()
        .map(|g| Series {
            name: g.label.clone(),
            points: g
                .curve()
                .into_iter()
                .map(|(_, s, k)| (s, 100.0 - k))
                .collect(),
        })
        .collect();
    let mut candidates: Vec<(f64, f64)> = groups
        .iter()
        .filter(|g| two_views(g))
        .flat_map(|g| g.curve().into_iter().map(|(_, s, k)| (s, 100.0 - k)))
        .collect();
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut frontier: Vec<(f64, f64)> = Vec::new();
    for (t, err) in candidates {
        if frontier.last().is_none_or(|&(_, best)| err < best) {
            frontier.push((t, err));
        }
    }
    if !frontier.is_empty() {
        series.push(Series {
            name: "2 views: Pareto frontier".into(),
            points: frontier,
        });
    }
    Panel {
        title: "kNN error by training time".into(),
        x_label: "training seconds".into(),
        y_label: "kNN error %".into(),
        series,
        log_x: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::{EpochResult, PointResult};
    use crate::sweep::{Axis, Point, PointState, SweepConfig};

    fn point(seed: i64, epochs: &[(u64, f64)]) -> PointResult {
        PointResult {
            point: Point {
                values: vec![
                    ("seed".into(), toml::Value::Integer(seed)),
                    ("views".into(), toml::Value::String("2x32".into())),
                ],
            },
            state: PointState::Done,
            knn_random_init: None,
            epochs: epochs
                .iter()
                .map(|&(epoch, knn)| EpochResult {
                    epoch,
                    train_seconds: 10.0 * epoch as f64,
                    knn: Some(knn),
                    loss: None,
                })
                .collect(),
            linear_top1: None,
        }
    }

    /// A sweep over `seed` and `axis` (the axes' values play no part in the figures).
    fn sweep(axis: &str, points: Vec<PointResult>) -> SweepResults {
        let axes = ["seed", axis].map(|key| Axis {
            key: key.into(),
            values: vec![],
        });
        SweepResults {
            sweep: SweepConfig {
                title: String::new(),
                base: toml::Table::new(),
                axes: axes.to_vec(),
                probe: false,
                exclude: vec![],
            },
            points,
        }
    }

    #[test]
    fn a_sweep_drawn_midway_shows_the_seeds_that_have_data() {
        let results = sweep(
            "views",
            vec![point(0, &[(1, 0.40), (2, 0.45)]), point(1, &[])],
        );
        let groups = groups(&results, &[], Drawn::Epochs);
        assert_eq!(groups[0].label, "views=2x32 (1 of 2 seeds)");
        assert_eq!(groups[0].curve(), [(1, 10.0, 40.0), (2, 20.0, 45.0)]);

        // A line across another axis (as pdim.png's λ lines span pdim) counts the seeds at its
        // thinnest point: seed 0 only at 2x32, seed 1 only at 4x32, so one seed per point.
        let mut wider = results.clone();
        let mut other = point(1, &[(1, 0.50)]);
        other.point.values[1].1 = toml::Value::String("4x32".into());
        wider.points.push(other);
        let label = |r: &SweepResults| super::groups(r, &["views"], Drawn::Epochs)[0].label.clone();
        assert_eq!(label(&wider), " (1 of 2 seeds)");
        wider.points[1].epochs = wider.points[0].epochs.clone();
        assert_eq!(label(&wider), " (1 of 2 seeds)", "4x32 still has one seed");
        let mut filled = point(0, &[(1, 0.45)]);
        filled.point.values[1].1 = toml::Value::String("4x32".into());
        wider.points.push(filled);
        assert_eq!(label(&wider), " (2 of 2 seeds)");
    }

    #[test]
    fn final_accuracy_figures_leave_out_a_run_still_training() {
        let mut finished = point(0, &[(1, 0.40), (2, 0.44), (3, 0.46)]);
        let mut stopped = point(1, &[(1, 0.30)]);
        stopped.state = PointState::Interrupted;
        for p in [&mut finished, &mut stopped] {
            p.point.values[1] = ("pdim".into(), toml::Value::Integer(64));
        }
        let results = sweep("pdim", vec![finished, stopped]);
        let [knn, _] = pdim(&results);
        assert_eq!(knn.series[0].name, " (1 of 2 seeds)");
        assert_eq!(knn.series[0].points, [(64.0, 46.0)]);
        // The curves still show the stopped run's epochs.
        let [by_epoch, _] = curves(&results);
        assert_eq!(by_epoch.series[0].name, "pdim=64 (2 of 2 seeds)");
    }
}
