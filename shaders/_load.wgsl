// Element loaders over a tensor stored as u32 words in binding `{{B}}`; spliced once per binding
// (B=w F=W, B=x F=X). Index e is the element index in the row-major tensor, so rows of 16-bit values need
// not start on a word boundary (odd k). The format is picked by the define {{F}}_F32, {{F}}_F16 or
// {{F}}_BF16.
//   {{B}}1(e) -> f32          one element
//   {{B}}2(e) -> vec2<f32>    elements e and e + 1
//   {{B}}1h / {{B}}2h         the same as f16 (F16_MATH variants, f16 storage only)

#ifdef {{F}}_F32
fn {{B}}1(e: u32) -> f32 {
    return bitcast<f32>({{B}}[e]);
}

fn {{B}}2(e: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>({{B}}[e]), bitcast<f32>({{B}}[e + 1u]));
}
#endif

#ifdef {{F}}_F16
fn {{B}}1(e: u32) -> f32 {
    return f16_at({{B}}[e >> 1u], e & 1u);
}

fn {{B}}2(e: u32) -> vec2<f32> {
    let i = e >> 1u;
    if ((e & 1u) == 0u) {
        return f16_pair({{B}}[i]);
    }
    return vec2<f32>(f16_pair({{B}}[i]).y, f16_pair({{B}}[i + 1u]).x);
}

#ifdef F16_MATH
// f16 -> f32 -> f16 is exact; naga has no bitcast from u32 to vec2<f16>.
fn {{B}}1h(e: u32) -> f16 {
    return f16({{B}}1(e));
}

fn {{B}}2h(e: u32) -> vec2<f16> {
    return vec2<f16>({{B}}2(e));
}
#endif
#endif

#ifdef {{F}}_BF16
fn {{B}}1(e: u32) -> f32 {
    return bf16_at({{B}}[e >> 1u], e & 1u);
}

fn {{B}}2(e: u32) -> vec2<f32> {
    let i = e >> 1u;
    if ((e & 1u) == 0u) {
        return bf16_pair({{B}}[i]);
    }
    return vec2<f32>(bf16_pair({{B}}[i]).y, bf16_pair({{B}}[i + 1u]).x);
}
#endif
