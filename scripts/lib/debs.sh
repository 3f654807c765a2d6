# Sourced by scripts/gpu-deps, gpu-check and gpu-kit: the Debian packages a
# build of kiln needs beyond CUDA, CMake and ninja on a GPU machine that
# reaches no registry, and how to use them there from a private prefix.

kiln_build_debs=(
  libfmt-dev libfmt9 catch2 nlohmann-json3-dev libcli11-dev
  libopenblas-pthread-dev libopenblas0-pthread libopenblas-dev libgfortran5 libquadmath0
  libsentencepiece-dev libsentencepiece0 pkgconf pkgconf-bin libpkgconf3
)

# kiln_download_debs DIR: fetches them into DIR (here, where the archive is reachable).
kiln_download_debs() {
  mkdir -p "$1"
  (cd "$1" && rm -f ./*.deb && apt-get download -qq "${kiln_build_debs[@]}" 2>/dev/null)
}

# kiln_use_debs DIR PREFIX: unpacks DIR/*.deb into PREFIX and points CMake,
# pkg-config and the loader at it.
kiln_use_debs() {
  local dir=$1 prefix=$2
  mkdir -p "$prefix"
  for f in "$dir"/*.deb; do dpkg -x "$f" "$prefix"; done
  local arch_lib=$prefix/usr/lib/x86_64-linux-gnu
  export CMAKE_PREFIX_PATH="$prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$arch_lib:$arch_lib/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$arch_lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR=$prefix
  export PATH="$prefix/usr/bin:$PATH"
  [[ -x $prefix/usr/bin/pkg-config ]] || ln -sf pkgconf "$prefix/usr/bin/pkg-config"
}
