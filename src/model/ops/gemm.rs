//! The GEMM every CPU op runs on (the `gemm` crate, which candle itself uses) and the per-thread
//! scratch buffers the ops reuse across calls.

/// Scratch buffers of one rayon thread, grown to the largest layer and kept across calls and
/// steps: fresh ones cost an allocation and page faults per chunk.
#[derive(Default)]
pub(super) struct Workspace(Vec<f32>);

impl Workspace {
    /// Runs `f` with this thread's workspace.
    pub(super) fn with<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
        thread_local! {
            static WORKSPACE: std::cell::RefCell<Workspace> = Default::default();
        }
        WORKSPACE.with_borrow_mut(f)
    }

    /// `N` disjoint buffers of the given lengths, with whatever values they held before: every
    /// caller writes them in full before reading.
    pub(super) fn buffers<const N: usize>(&mut self, lens: [usize; N]) -> [&mut [f32]; N] {
        let total = lens.iter().sum();
        if self.0.len() < total {
            self.0.resize(total, 0.0);
        }
        let mut rest = &mut self.0[..];
        lens.map(|len| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            head
        })
    }
}

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]`, in tiles that stay in cache.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`, each given by its row and column strides, on the
/// calling thread (callers run their chunks in parallel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above state the extents; the slices outlive the call and `dst` is
    // exclusively borrowed. Chunks already run in parallel, so the GEMM itself runs on one thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
