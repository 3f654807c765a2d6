// curate streams: the memory its work takes (the child's peak resident set
// above that of `curate --help`, whose libraries alone are over 200 MB
// resident in a CUDA build) stays under a cap four times smaller than the
// corpus, and grows by a small part of the text added when the corpus grows
// fourfold (what does grow is the band keys of the kept documents, a few
// hundred bytes each). Built outside the sanitizer build, whose shadow
// memory and quarantine would be what is measured.

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "helpers.h"

namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::temp_directory_path() / "kiln_test_curate_memory";

// `megabytes` of fortune files: documents of 30 words (dropped by Gopher's
// 50-word rule as they stream past), one in a hundred of 60 (kept).
void write_corpus(const fs::path& dir, int megabytes) {
  fs::create_directories(dir);
  std::mt19937_64 rng(megabytes);
  const int64_t per_file = int64_t{16} << 20;
  for (int f = 0; f * per_file < (int64_t{megabytes} << 20); ++f) {
    std::ofstream out(dir / fmt::format("part{}", f));
    std::string doc;
    for (int64_t written = 0; written < per_file; written += static_cast<int64_t>(doc.size())) {
      doc.clear();
      const int words = rng() % 100 == 0 ? 60 : 30;
      for (int w = 0; w < words; ++w) fmt::format_to(std::back_inserter(doc), "{}tok{}", w ? " " : "", rng() % 20000);
      doc += "\n%\n";
      out << doc;
    }
  }
}

// curate's peak resident memory in MB with these arguments.
double curate_peak_mb(const std::vector<std::string>& arguments) {
  std::vector<char*> argv{const_cast<char*>(KILN_CURATE)};
  for (const std::string& a : arguments) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::execv(KILN_CURATE, argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  REQUIRE(::wait4(child, &status, 0, &usage) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  return static_cast<double>(usage.ru_maxrss) / 1024;  // ru_maxrss is in KB
}

}  // namespace

TEST_CASE("curate runs a corpus four times its memory cap within the cap, growing little with more text") {
  fs::remove_all(kDir);
  write_corpus(kDir / "small", 64);
  write_corpus(kDir / "large", 256);
  const auto run = [](const std::string& corpus) {
    return curate_peak_mb({"--source", "big=" + (kDir / corpus).string(), "--out", (kDir / (corpus + "_out")).string(),
                           "--vocab", "400", "--tokenizer-sample-mb", "2"});
  };
  const double baseline = curate_peak_mb({"--help"}), small = run("small"), large = run("large");
  INFO("peak resident memory: " << baseline << " MB for --help, " << small << " MB for 64 MB of text, " << large
                                << " MB for 256 MB");
  CHECK(large - baseline < 64);
  CHECK(large - small < 0.1 * (256 - 64));
  fs::remove_all(kDir);
}
