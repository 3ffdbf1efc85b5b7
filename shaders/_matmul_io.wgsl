// Bindings and parameters shared by the matmul kernels (matvec, gemm). One dispatch computes
// y rows [m_base, m_base + m_count) of one y buffer against w rows of one weight chunk.

struct Params {
    // Reduction length (columns of x and w).
    k: u32,
    // Row stride of y: the total number of output columns.
    n: u32,
    // Weight rows in the bound chunk.
    n_rows: u32,
    // Row of x that matches row 0 of the bound y buffer.
    x_row0: u32,
    // Column of y that matches row 0 of the bound weight chunk.
    y_col0: u32,
    // First weight-chunk row of this dispatch.
    row_base: u32,
    // First y row of this dispatch.
    m_base: u32,
    // y rows of this dispatch.
    m_count: u32,
}

// w: [n_rows, k] in the weight format (W_F32 / W_F16 / W_BF16), as u32 words.
@group(0) @binding(0) var<storage, read> w: array<u32>;
// x: [m, k] F32 or F16 (X_F32 / X_F16), as u32 words.
@group(0) @binding(1) var<storage, read> x: array<u32>;
// y: [rows of this y buffer, n] F32.
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// Dispatch parameters.
@group(0) @binding(3) var<uniform> p: Params;
