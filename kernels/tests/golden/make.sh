#!/usr/bin/env bash
# Regenerates the golden vectors with ggml's own quantizer (../shared/peers/ggml-cpu/ggml-quant).
# input.f32: 16 rows of 256 awkward values (see make_input.py); <type>.bin: ggml's bytes;
# <type>.deq.f32: ggml's dequantization of those bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
oracle=${WATTLE_GGML_QUANT:-$here/../../../../shared/peers/ggml-cpu/ggml-quant}
python3 "$here/make_input.py" > "$here/input.f32"
for t in f16 bf16 q8_0 q4_0 q4_1 q4_K q6_K; do
  "$oracle" quantize "$t" 256 < "$here/input.f32" > "$here/$t.bin"
  "$oracle" dequantize "$t" 256 < "$here/$t.bin" > "$here/$t.deq.f32"
done
