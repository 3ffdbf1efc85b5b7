// Row-wise sums across a workgroup: every invocation holds MAXM partial sums (one per x row), of
// which the first mc are in use (mc <= MAXM, uniform across the workgroup); reduce_rows returns
// the full sum of row `lid` to invocations lid < mc. Needs `WG` (workgroup size override, a power
// of two <= MAX_WG), `MAXM` and `ROWS` (<= MAXM, the rows in use at most) from the including kernel.
// Call from uniform control flow: it contains barriers.

const MAX_WG: u32 = 256u;

#ifdef SG
// Subgroup variant: subgroupAdd inside each subgroup, then one partial per subgroup in workgroup
// memory. Subgroups are at least 4 wide, so at most MAX_WG / 4 of them.
const MAX_SG: u32 = 64u;
var<workgroup> red: array<f32, MAXM * MAX_SG>;

fn reduce_rows(acc: array<f32, MAXM>, mc: u32, lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32) -> f32 {
    for (var i = 0u; i < ROWS; i++) {
        let t = subgroupAdd(acc[i]);
        if (sg_lane == 0u) {
            red[i * MAX_SG + sg_id] = t;
        }
    }
    workgroupBarrier();
    var s = 0.0;
    if (lid < mc) {
        for (var j = 0u; j < n_sg; j++) {
            s += red[lid * MAX_SG + j];
        }
    }
    return s;
}
#else
// Workgroup-memory variant: a tree over WG slots, log2(WG) steps derived from the override.
var<workgroup> red: array<f32, MAXM * MAX_WG>;

fn reduce_rows(acc: array<f32, MAXM>, mc: u32, lid: u32) -> f32 {
    for (var i = 0u; i < ROWS; i++) {
        red[i * MAX_WG + lid] = acc[i];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            for (var i = 0u; i < mc; i++) {
                red[i * MAX_WG + lid] += red[i * MAX_WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    var r = 0.0;
    if (lid < mc) {
        r = red[lid * MAX_WG];
    }
    return r;
}
#endif
