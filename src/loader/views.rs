//! View specs: `NxS[:lo-hi]` groups separated by commas, e.g. `2x32:0.14-1,6x16:0.05-0.14`
//! means two 32px views with RandomResizedCrop scale in [0.14, 1] and six 16px views with scale
//! in [0.05, 0.14]. Each group becomes one `[N*B, 3, S, S]` buffer in a batch.

use std::fmt;
use std::str::FromStr;

/// RandomResizedCrop's default scale range (torchvision, solo-learn).
pub const DEFAULT_SCALE: (f32, f32) = (0.08, 1.0);

/// One resolution group of views.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewGroup {
    pub count: usize,
    pub size: u32,
    pub scale: (f32, f32),
}

/// All view groups of a batch, in spec order.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSpec {
    pub groups: Vec<ViewGroup>,
}

impl ViewSpec {
    /// Total views per image (K).
    pub fn views(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// The side of the largest view (a spec always has at least one group).
    pub fn largest_side(&self) -> u32 {
        self.groups.iter().map(|g| g.size).max().unwrap_or(32)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad view spec `{spec}`: {problem} (expected e.g. `2x32:0.14-1,6x16:0.05-0.14`)")]
pub struct ViewSpecError {
    spec: String,
    problem: String,
}

impl FromStr for ViewSpec {
    type Err = ViewSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |problem: String| ViewSpecError {
            spec: spec.to_string(),
            problem,
        };
        let mut groups = Vec::new();
        for part in spec.split(',').map(str::trim) {
            let (shape, scale) = part
                .split_once(':')
                .map_or((part, None), |(a, b)| (a, Some(b)));
            let (count, size) = shape
                .split_once(['x', 'X'])
                .ok_or_else(|| bad(format!("`{part}` is not NxS")))?;
            let count: usize = count
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{count}` is not a view count")))?;
            let size: u32 = size
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{size}` is not a size in pixels")))?;
            if count == 0 || size == 0 || size > 4096 {
                return Err(bad(format!("`{part}` needs N >= 1 and 1 <= S <= 4096")));
            }
            let scale = match scale {
                None => DEFAULT_SCALE,
                Some(range) => {
                    let (lo, hi) = range
                        .split_once('-')
                        .ok_or_else(|| bad(format!("`{range}` is not lo-hi")))?;
                    let parse = |v: &str| {
                        v.trim()
                            .parse::<f32>()
                            .map_err(|_| bad(format!("`{v}` is not a number")))
                    };
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if !(0.0 < lo && lo <= hi && hi <= 1.0) {
                        return Err(bad(format!(
                            "scale {lo}-{hi} must satisfy 0 < lo <= hi <= 1"
                        )));
                    }
                    (lo, hi)
                }
            };
            groups.push(ViewGroup { count, size, scale });
        }
        Ok(Self { groups })
    }
}

impl fmt::Display for ViewSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("{}x{}:{}-{}", g.count, g.size, g.scale.0, g.scale.1))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed_groups_and_defaults() {
        let spec: ViewSpec = "2x32:0.14-1, 6x16:0.05-0.14".parse().unwrap();
        assert_eq!(
            spec.groups[0],
            ViewGroup {
                count: 2,
                size: 32,
                scale: (0.14, 1.0)
            }
        );
        assert_eq!(
            spec.groups[1],
            ViewGroup {
                count: 6,
                size: 16,
                scale: (0.05, 0.14)
            }
        );
        assert_eq!(spec.views(), 8);
        let plain: ViewSpec = "4x16".parse().unwrap();
        assert_eq!(plain.groups[0].scale, DEFAULT_SCALE);
        assert_eq!(plain.to_string().parse::<ViewSpec>().unwrap(), plain);
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        for (spec, why) in [
            ("2y32", "not NxS"),
            ("0x32", "N >= 1"),
            ("2x32:0.5-0.2", "lo <= hi"),
            ("2x32:0.1", "lo-hi"),
        ] {
            let err = spec.parse::<ViewSpec>().unwrap_err().to_string();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }
}
