#!/bin/sh
# Builds {{name}}.wasm from app.py against the WIT in wit/.
# Needs componentize-py (pip install -r requirements.txt).
set -eu
cd "$(dirname "$0")"
# componentize-py bundles the active virtualenv's packages; build from the app alone.
env -u VIRTUAL_ENV componentize-py -d wit -w service-handler componentize app -o {{name}}.wasm
