// kv_scores: a KV cache's eviction scores from the logits the attention split pass kept. For
// every (KV head g, key slot j): the softmax probability of key j summed over the scored rows
// of g's query heads, exp(logit − m_r) / l_r with each row's final max and sum from the merge
// pass, added to `acc` (calls over query chunks accumulate).

struct Params {
    t_k: u32,
    h_q: u32,
    h_kv: u32,
    // Scored queries, and the first one's row in `stats`.
    nq: u32,
    q0: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read> lg: array<f32>;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

override WG: u32 = 64u;
const NEG_HALF: f32 = -1.0e38;

@compute @workgroup_size(WG)
fn kv_scores(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= p.h_kv * p.t_k) {
        return;
    }
    let g = e / p.t_k;
    let j = e % p.t_k;
    let G = p.h_q / p.h_kv;
    var sum = 0.0;
    for (var iq = 0u; iq < p.nq; iq++) {
        for (var hh = 0u; hh < G; hh++) {
            let head = g * G + hh;
            let x = lg[(iq * p.h_q + head) * p.t_k + j];
            let row = (p.q0 + iq) * p.h_q + head;
            let l = stats[2u * row + 1u];
            if (x > NEG_HALF && l > 0.0) {
                sum += exp(x - stats[2u * row]) / l;
            }
        }
    }
    acc[e] += sum;
}
