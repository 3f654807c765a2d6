#pragma once
// What every example program shares: the number checks CLI11 lacks, a bad
// command line answered in one line, and how a program ends on an error.
//
//   app.add_option("--lr", a.lr, "peak learning rate")->check(program::positive);
//   if (auto code = program::parse(app, argc, argv)) return *code;
//   return program::run("train", [&] { return run(a); });

#include <CLI/CLI.hpp>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include <kiln/kiln.h>

namespace program {

// A number in [lo, hi]. NaN fails, which CLI11's Range and PositiveNumber let through.
inline CLI::Validator in_range(double lo, double hi, const std::string& description) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !(value >= lo && value <= hi))
          return fmt::format("{} is not {}", text, description);
        return "";
      },
      description);
}
// A finite number above zero (steps, sizes, rates).
inline const CLI::Validator positive = in_range(std::nextafter(0.0, 1.0), DBL_MAX, "a number > 0");
// A finite number at or above zero (coefficients, clips; 0 often turns a feature off).
inline const CLI::Validator non_negative = in_range(0, DBL_MAX, "a number >= 0");
// A probability or a share, in [0, 1].
inline const CLI::Validator fraction = in_range(0, 1, "a number in [0, 1]");

// "NAME=WEIGHT" as a name and a finite weight > 0 (sampling weights of named sources).
inline std::pair<std::string, double> named_weight(const std::string& spec, const char* option) {
  const size_t eq = spec.find('=');
  double w = 0;
  KILN_CHECK(eq != std::string::npos && eq > 0 && CLI::detail::lexical_cast(spec.substr(eq + 1), w) && w > 0 &&
                 std::isfinite(w),
             "{} {}: expected NAME=WEIGHT with a weight > 0", option, spec);
  return {spec.substr(0, eq), w};
}

// Parses the command line. A bad one is answered with one line on stderr,
// "train: --steps: 0 is not a number > 0", and the exit code to return;
// --help prints and returns 0. nullopt: go on.
inline std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    fmt::print(stderr, "{}: {}\n", std::filesystem::path(argv[0]).filename().string(), e.what());
    return e.get_exit_code();
  }
  return std::nullopt;
}

// Runs a program's body: any error (kiln's, the filesystem's, an allocation's)
// ends it with one line and exit code 1, and under mpirun every rank.
template <typename F>
int run(const char* name, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    // Under mpirun (OpenMPI's launcher says so) one failing rank must not
    // leave the others waiting in a collective.
    if (const char* ranks = std::getenv("OMPI_COMM_WORLD_SIZE"); ranks && std::atoi(ranks) > 1)
      kiln::dist::abort_all(e);
    fmt::print(stderr, "{}: {}\n", name, e.what());
    return 1;
  }
}

}  // namespace program
