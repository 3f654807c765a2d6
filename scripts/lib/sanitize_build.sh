# Sourced by scripts/test and scripts/fuzz: the CPU-only build under
# AddressSanitizer + UndefinedBehaviorSanitizer, with clang so that the fuzz
# targets are libFuzzer programs (tests/fuzz). One build serves both.

kiln_sanitize_dir=${KILN_SANITIZE_DIR:-build/sanitize-clang}

# kiln_configure_sanitize_build [CMAKE ARGS...]
kiln_configure_sanitize_build() {
  # -O1 with line tables: what the sanitizers' documentation suggests, and half the compile time of -O2 -g.
  CC=clang-19 CXX=clang++-19 cmake -S . -B "$kiln_sanitize_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DKILN_SANITIZE=ON -DKILN_FUZZ=ON -DKILN_BUILD_EXAMPLES=OFF "$@"
}
