//! PNG line charts for people to look at: a run's curves and a sweep's figures. Panels are drawn
//! side by side with `plotters` into an RGB buffer, encoded by `image`, written to a temporary
//! name and renamed, with the DejaVu Sans font built in (no system font library needed).
//! Imports nothing from the crate.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

/// One line: `(x, y)` points in order, drawn with markers.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A log₂ x axis (projector dimensions, view counts).
    pub log_x: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: drawing failed: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

const PANEL_WIDTH: u32 = 560;
const HEIGHT: u32 = 420;
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        // The font is ours and valid; a failure would show as missing text, not a crash.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// Draws `panels` side by side into the PNG at `path`.
pub fn draw_png(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    register_font();
    let width = PANEL_WIDTH * panels.len().max(1) as u32;
    let mut buffer = vec![255u8; (width * HEIGHT * 3) as usize];
    let failed = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, HEIGHT)).into_drawing_area();
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(panel, area).map_err(|e| failed(e.to_string()))?;
        }
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(width, HEIGHT, buffer)
        .ok_or_else(|| failed("buffer size".into()))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| failed(e.to_string()))?;
    crate::atomic_file::write(path, png.into_inner()).map_err(|error| PlotError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// A tick label: an integer when the value is one, else at most three decimals.
fn short(x: f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round())
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').to_string()
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw_panel(panel: &Panel, area: &Area) -> DrawResult {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let span = |values: Vec<f64>, pad: f64| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match (lo.is_finite(), hi > lo) {
            (false, _) => (0.0, 1.0),
            (true, false) => (lo - 0.5, hi + 0.5),
            (true, true) => (lo - pad * (hi - lo), hi + pad * (hi - lo)),
        }
    };
    let x_of = |x: f64| if panel.log_x { x.max(1e-12).log2() } else { x };
    let (x0, x1) = span(points().map(|p| x_of(p.0)).collect(), 0.03);
    let (y0, y1) = span(points().map(|p| p.1).collect(), 0.08);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let log_x = panel.log_x;
    let x_format = move |x: &f64| match log_x {
        true => short(2f64.powf(*x)),
        false => short(*x),
    };
    // On a log axis, about one label per doubling, so that they fall on powers of two.
    let x_labels = match log_x {
        true => ((x1 - x0).round() as usize + 1).clamp(2, 12),
        false => 8,
    };
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&x_format)
        .label_style((FONT, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> = series.points.iter().map(|&(x, y)| (x_of(x), y)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    if panel.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 12))
            .position(legend_corner(panel, (x0, x1), (y0, y1), x_of))
            .draw()?;
    }
    Ok(())
}

/// The corner of the plot whose quarter the lines cross least, for the legend box: a fixed
/// corner hid pdim.png's collapsed λ, whose line falls to the lower right. Ties go to the lower
/// right, then lower left, upper right, upper left.
fn legend_corner(
    panel: &Panel,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    x_of: impl Fn(f64) -> f64,
) -> SeriesLabelPosition {
    // Points along each line, not only its vertices: a long segment crosses quarters between them.
    const STEPS: usize = 16;
    let mut crossings = [0usize; 4];
    for series in &panel.series {
        let line: Vec<(f64, f64)> = series.points.iter().map(|&(x, y)| (x_of(x), y)).collect();
        let segments = line.windows(2).map(|w| (w[0], w[1]));
        let single = (line.len() == 1).then(|| (line[0], line[0]));
        for ((ax, ay), (bx, by)) in segments.chain(single) {
            for step in 0..=STEPS {
                let t = step as f64 / STEPS as f64;
                let right = ax + t * (bx - ax) > (x0 + x1) / 2.0;
                let upper = ay + t * (by - ay) > (y0 + y1) / 2.0;
                crossings[usize::from(upper) * 2 + usize::from(!right)] += 1;
            }
        }
    }
    let corners = [
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
    ];
    let least = (0..4).min_by_key(|&i| crossings[i]).unwrap_or(0);
    corners[least].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_lines_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let series = |name: &str, k: f64| Series {
            name: name.into(),
            points: (1..=5).map(|e| (e as f64, k * (e as f64).sqrt())).collect(),
        };
        let panels = [
            Panel {
                title: "kNN top-1".into(),
                x_label: "epoch".into(),
                y_label: "%".into(),
                series: vec![series("K=2", 1.0), series("K=4", 1.2)],
                log_x: false,
            },
            Panel {
                title: "pdim".into(),
                series: vec![Series {
                    name: String::new(),
                    points: vec![(64.0, 1.0), (256.0, 2.0), (8192.0, 2.5)],
                }],
                log_x: true,
                ..Panel::default()
            },
        ];
        draw_png(&path, &panels).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * PANEL_WIDTH, HEIGHT));
        let coloured = img
            .pixels()
            .filter(|p| p.0.iter().max() != p.0.iter().min())
            .count();
        let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(
            coloured > 500,
            "the lines are drawn in colour ({coloured} pixels)"
        );
        assert!(dark > 500, "axes and text are drawn ({dark} dark pixels)");
        let files = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files, 1, "no temporary file is left beside the plot");
    }

    #[test]
    fn the_legend_goes_to_a_corner_the_lines_leave_free() {
        let panel = |points: Vec<(f64, f64)>| Panel {
            series: vec![Series {
                name: "a".into(),
                points,
            }],
            ..Panel::default()
        };
        let corner = |points| legend_corner(&panel(points), (0.0, 10.0), (0.0, 10.0), |x| x);
        // Rising: the lower right is free, as by default.
        let rising = vec![(0.0, 0.0), (10.0, 10.0)];
        assert_eq!(corner(rising), SeriesLabelPosition::LowerRight);
        // Falling to the lower right (a collapsed run): the legend moves out of its way.
        let falling = vec![(0.0, 9.0), (6.0, 9.0), (10.0, 1.0)];
        assert_eq!(corner(falling), SeriesLabelPosition::LowerLeft);
        // Everything low: the legend goes up.
        let low = vec![(0.0, 1.0), (5.0, 2.0), (10.0, 1.0)];
        assert_eq!(corner(low), SeriesLabelPosition::UpperRight);
    }
}
