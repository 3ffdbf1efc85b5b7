// Block readers of a quantized weight format: the byte loaders plus the one partial the
// variant's W_* define selects. Every format offers the same accumulate functions, so the
// kernels that include this stay format-agnostic.
#include "bytes"
#ifdef W_Q8_0
#include "q8_0"
#endif
#ifdef W_Q4_0
#include "q4_0"
#endif
#ifdef W_Q4_1
#include "q4_1"
#endif
#ifdef W_Q4_K
#include "q4_k"
#endif
#ifdef W_Q6_K
#include "q6_k"
#endif
