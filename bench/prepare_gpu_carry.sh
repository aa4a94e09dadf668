#!/usr/bin/env bash
# Prepare what `bench/serve_gpu.py` needs on a lent GPU machine (its image has torch, transformers,
# accelerate, peft, scikit-learn, typer, httpx; not the service's web stack, pydantic or hey).
# Writes three ignored folders to name in the device tool's `carry` (about 15 MB in all):
#   .gpu/smollm2-135m  config + tokenizer of the prepared base (the model's shape, no weights)
#   .whl/              wheels for Python 3.12 on x86-64 (installed there with --no-index)
#   .deb/              the hey load generator (unpacked there with dpkg -x)
# Then, on the device:  see the command printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .gpu .whl .deb; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
. .venv/bin/activate
base=${1:-artifacts/base/smollm2-135m}
python bench/serve_gpu.py --export-shape "$base" --shape .gpu/smollm2-135m
mkdir -p .whl .deb
pkgs=(litestar==2.25.0 litestar-htmx==0.5.0 msgspec==0.23.0 multipart==2.0.1 polyfactory==3.5.0
      faker==40.63.0 rich-click==1.9.9 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
      typing-inspection==0.4.5
      pydantic-settings==2.16.3 python-dotenv==1.2.4 uvicorn==0.54.0)
for p in "${pkgs[@]}"; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$p"
done
(cd .deb && apt-get download hey >/dev/null)
du -sh .gpu .whl .deb
cat <<'CMD'
device run (carry: [".gpu", ".whl", ".deb"], timeout_s 540):
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && dpkg -x .deb/hey_*.deb /tmp/hey && export HEY=/tmp/hey/usr/bin/hey && PYTHONUNBUFFERED=1 python3 bench/serve_gpu.py --shape .gpu/smollm2-135m --out "$OUT" 2>&1 | tee "$OUT/log.txt"
CMD
