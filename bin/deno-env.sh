# Sourced by bin/deno and bin/nerdbox with ROOT set (the checkout): the pinned Deno, installed
# from the npm registry into .tools/ on first use; sets DENO to its path and exports its settings.
VERSION=2.9.6
DENO="$ROOT/.tools/deno-$VERSION/node_modules/deno/deno"
if [ ! -x "$DENO" ]; then
  command -v npm >/dev/null 2>&1 || { echo "bin/deno: npm is needed to install Deno $VERSION (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$ROOT/.tools/deno-$VERSION"
  npm install --silent --no-audit --no-fund --prefix "$ROOT/.tools/deno-$VERSION" "deno@$VERSION" >&2
  # npm may skip the postinstall that puts the native binary in place; fall back to the platform package.
  if [ ! -x "$DENO" ]; then
    cp "$ROOT/.tools/deno-$VERSION/node_modules/@deno/linux-x64-glibc/deno" "$DENO"
  fi
fi
export DENO_DIR="${DENO_DIR:-$ROOT/.cache/deno}"
export DENO_NO_UPDATE_CHECK=1
