//! PNG line charts for people to look at: a run's curves and a sweep's figures. Panels are drawn
//! side by side with `plotters` into an RGB buffer, encoded by `image`, written to a temporary
//! name and renamed, with the DejaVu Sans font built in (no system font library needed).
//! Imports nothing from the crate but `atomic_file`.

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
    let legends = Legend::for_panels(panels, width);
    let legend_height = legends.iter().map(Legend::height).max().unwrap_or(0);
    let height = HEIGHT + legend_height;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let failed = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let (charts, below) = root.split_vertically(HEIGHT);
        let areas = charts.split_evenly((1, panels.len().max(1)));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(panel, area).map_err(|e| failed(e.to_string()))?;
        }
        let strips = below.split_evenly((1, legends.len().max(1)));
        for (legend, strip) in legends.iter().zip(&strips) {
            legend.draw(strip).map_err(|e| failed(e.to_string()))?;
        }
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
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
        chart.draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?;
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    Ok(())
}

/// Rows of the legend below the charts, in pixels.
const LEGEND_ROW: u32 = 18;
/// A label's width per character at the legend's 12 px font, rounded up (DejaVu Sans).
const LEGEND_CHAR: u32 = 7;

/// The line names under the charts, in columns: a legend inside a chart covers lines (a
/// collapsed run's, the last epochs'), and with nine lines no corner is free.
struct Legend<'a> {
    /// (name, index of the series: its colour).
    entries: Vec<(&'a str, usize)>,
    columns: usize,
}

impl<'a> Legend<'a> {
    /// One legend across the whole width when every panel names the same lines (a figure's
    /// panels usually show one set of lines two ways), else one under each panel.
    fn for_panels(panels: &'a [Panel], width: u32) -> Vec<Legend<'a>> {
        let names = |p: &'a Panel| -> Vec<(&'a str, usize)> {
            let named = p
                .series
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.name.is_empty());
            named.map(|(i, s)| (s.name.as_str(), i)).collect()
        };
        let shared = panels.windows(2).all(|w| names(&w[0]) == names(&w[1]));
        match (panels.first(), shared) {
            (None, _) => Vec::new(),
            (Some(first), true) => vec![Legend::new(names(first), width)],
            (Some(_), false) => (panels.iter())
                .map(|p| Legend::new(names(p), PANEL_WIDTH))
                .collect(),
        }
    }

    fn new(entries: Vec<(&'a str, usize)>, width: u32) -> Self {
        let widest = entries.iter().map(|(n, _)| n.chars().count()).max();
        let column = 40 + LEGEND_CHAR * widest.unwrap_or(0) as u32;
        let fit = (width / column).clamp(1, entries.len().max(1) as u32) as usize;
        // As few columns as the rows need: 9 names that fit 4 a row take 3 rows, so 3 columns.
        let columns = entries
            .len()
            .max(1)
            .div_ceil(entries.len().max(1).div_ceil(fit));
        Self { entries, columns }
    }

    fn height(&self) -> u32 {
        match self.entries.len() {
            0 => 0,
            n => n.div_ceil(self.columns) as u32 * LEGEND_ROW + 12,
        }
    }

    /// Entries fill the columns top to bottom, so a column reads in the lines' order.
    fn draw(&self, area: &Area) -> DrawResult {
        let rows = self.entries.len().div_ceil(self.columns);
        let column_width = area.dim_in_pixel().0 as i32 / self.columns as i32;
        for (k, &(name, series)) in self.entries.iter().enumerate() {
            let colour = Palette99::pick(series).to_rgba();
            let x = 24 + (k / rows) as i32 * column_width;
            let y = 6 + (k % rows) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            area.draw(&PathElement::new(
                vec![(x, y), (x + 16, y)],
                colour.stroke_width(2),
            ))?;
            area.draw(&Text::new(name, (x + 22, y - 7), (FONT, 12)))?;
        }
        Ok(())
    }
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
        // One legend row under the first panel, whose two lines are named.
        assert_eq!(
            img.dimensions(),
            (2 * PANEL_WIDTH, HEIGHT + LEGEND_ROW + 12)
        );
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
    fn panels_naming_the_same_lines_share_one_legend_below_them() {
        let named = |names: &[&str]| Panel {
            series: (names.iter())
                .map(|n| Series {
                    name: n.to_string(),
                    points: vec![(1.0, 1.0)],
                })
                .collect(),
            ..Panel::default()
        };
        let nine: Vec<String> = (1..=9).map(|i| format!("line {i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        let same = [named(&nine), named(&nine)];
        let legends = Legend::for_panels(&same, 2 * PANEL_WIDTH);
        assert_eq!(legends.len(), 1);
        assert_eq!(legends[0].entries.len(), 9);
        // "line 9" is 6 characters: 82 px a column, as many as fit (13), but no more than 9.
        assert_eq!(legends[0].columns, 9);
        assert_eq!(legends[0].height(), LEGEND_ROW + 12);

        let long = "views=2x32:0.08-1, fraction=0.25 (2 of 2 seeds)";
        let different = [named(&[long, long, long]), named(&["a"])];
        let legends = Legend::for_panels(&different, 2 * PANEL_WIDTH);
        assert_eq!(legends.len(), 2);
        // 47 characters: one column of three rows under a 560 px panel.
        assert_eq!(
            (legends[0].columns, legends[0].height()),
            (1, 3 * LEGEND_ROW + 12)
        );

        let unnamed = [named(&[""])];
        assert_eq!(Legend::for_panels(&unnamed, PANEL_WIDTH)[0].height(), 0);
    }
}
