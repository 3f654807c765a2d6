// Streamed documents (kiln/data/document_stream.h): plain text splits as
// split_documents splits the whole file, gzip reads as its plain copy, JSON
// lines give their text field, and every malformed input names its file.

#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "helpers.h"

namespace fs = std::filesystem;
using namespace kiln::data;

namespace {

const fs::path kDir = fs::temp_directory_path() / "kiln_test_document_stream";

std::string write(const std::string& name, const std::string& bytes) {
  const std::string path = (kDir / name).string();
  fs::create_directories(fs::path(path).parent_path());
  if (name.ends_with(".gz")) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
  return path;
}

std::vector<StreamedDocument> read_all(const std::vector<std::string>& files, DocumentStreamOptions options = {}) {
  DocumentStream stream(files, std::move(options));
  std::vector<StreamedDocument> docs;
  for (StreamedDocument d; stream.next(d);) docs.push_back(d);
  CHECK(stream.bytes_read() == stream.bytes_total());
  return docs;
}

std::vector<std::string> texts(const std::vector<StreamedDocument>& docs) {
  std::vector<std::string> t;
  for (const auto& d : docs) t.push_back(d.text);
  return t;
}

}  // namespace

TEST_CASE("plain text streams as split_documents splits it, gzipped or not, across buffer boundaries") {
  const std::string long_line(700000, 'x');  // longer than the reader's buffer
  const std::vector<std::string> samples{
      "A fortune.\n%\nAnother\r\none.\n%\n\n%\nlast",       // fortune file, CRLF, an empty one
      "para one\nstill one\n\n\npara two\n" + long_line + "\n\nend\n",  // blank-line paragraphs
      "",                                                  // nothing
      "no newline at the end",
  };
  for (size_t i = 0; i < samples.size(); ++i) {
    const std::string plain = write(fmt::format("s{}.txt", i), samples[i]);
    const std::string zipped = write(fmt::format("s{}.txt.gz", i), samples[i]);
    const auto docs = read_all({plain, zipped});
    const std::vector<std::string> expected = split_documents(samples[i]);
    REQUIRE(docs.size() == 2 * expected.size());
    for (size_t d = 0; d < expected.size(); ++d) {
      CHECK(docs[d].text == expected[d]);
      CHECK(docs[expected.size() + d].text == expected[d]);
      CHECK(docs[d].file == 0);
      CHECK(docs[expected.size() + d].file == 1);
      CHECK(docs[d].index == static_cast<int64_t>(d));
    }
  }
}

TEST_CASE("whole files: a plain file is one document, a fortune file still one per fortune") {
  const auto docs = read_all({write("whole.txt", "one\n\ntwo\n"), write("fortunes", "a\n%\nb\n\nc\n")},
                             {.whole_files = true});
  CHECK(texts(docs) == std::vector<std::string>{"one\n\ntwo\n", "a\n", "b\n\nc\n"});
}

TEST_CASE("JSON lines give each record's text field; blank lines are skipped") {
  const std::string lines = "{\"text\": \"first\\ndoc\", \"id\": 1}\n\n{\"id\": 2, \"text\": \"\\u00e9t\\u00e9\"}\r\n";
  const auto docs = read_all({write("a.jsonl", lines), write("b.jsonl.gz", lines)});
  CHECK(texts(docs) == std::vector<std::string>{"first\ndoc", "été", "first\ndoc", "été"});
  CHECK(docs[3].file == 1);
  CHECK(docs[3].index == 1);
  const auto content = read_all({write("c.jsonl", "{\"content\": \"x\"}\n")}, {.text_field = "content"});
  CHECK(texts(content) == std::vector<std::string>{"x"});
}

TEST_CASE("documents past the bound are read through, not held, and marked") {
  const std::string big(5000, 'b'), line(300, 'l');
  std::string many_lines;
  for (int i = 0; i < 20; ++i) many_lines += line + "\n";
  const std::string plain = write("bound.txt", "small\n\n" + big + "\n\n" + many_lines + "\nlast\n");
  const std::string json = write("bound.jsonl", "{\"text\": \"" + big + "\"}\n{\"text\": \"ok\"}\n{\"text\": \"" +
                                                   std::string(1500, 'j') + "\"}\n");
  const auto docs = read_all({plain, json}, {.max_document_bytes = 1024});
  REQUIRE(docs.size() == 7);
  const std::vector<bool> too_long{false, true, true, false, true, false, true};
  for (size_t d = 0; d < docs.size(); ++d) {
    CHECK(docs[d].too_long == too_long[d]);
    if (too_long[d]) CHECK(docs[d].text.empty());
  }
  CHECK(docs[0].text == "small\n");
  CHECK(docs[1].bytes == 5001);
  CHECK(docs[2].bytes == 20 * 301);
  CHECK(docs[3].text == "last\n");
  CHECK(docs[5].text == "ok");
}

TEST_CASE("a missing file, broken JSON and corrupt gzip raise naming the file and line") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(DocumentStream({(kDir / "absent.txt").string()}), Contains("absent.txt"));
  const auto error_of = [](const std::string& path) {
    try {
      read_all({path});
    } catch (const kiln::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(error_of(write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \n")), Contains("bad.jsonl:2: not JSON"));
  CHECK_THAT(error_of(write("field.jsonl", "{\"body\": \"x\"}\n")), Contains("field.jsonl:1: no \"text\" field"));
  CHECK_THAT(error_of(write("type.jsonl", "{\"text\": 3}\n")), Contains("\"text\" must be a string"));
  CHECK_THAT(error_of(write("array.jsonl", "[1]\n")), Contains("each line must be a JSON object"));
  std::string whole(100000, 'a');
  whole += "\n\nb\n";
  std::string zipped = kiln::read_file(write("whole.txt.gz", whole));
  zipped.resize(zipped.size() / 2);
  fs::rename(write("cut.raw", zipped), kDir / "cut.txt.gz");  // stored as cut, not compressed again
  CHECK_THAT(error_of((kDir / "cut.txt.gz").string()), Contains("cannot read " + (kDir / "cut.txt.gz: unexpected end of file").string()));
}

TEST_CASE("text_files lists directories in name order without fortune indexes") {
  fs::remove_all(kDir / "tree");
  write("tree/b/z.txt", "z");
  write("tree/a.txt", "a");
  write("tree/a.dat", "index");
  write("tree/b/y.u8", "index");
  const std::string single = write("single.txt", "s");
  const auto files = text_files({(kDir / "tree").string(), single});
  CHECK(files == std::vector<std::string>{(kDir / "tree/a.txt").string(), (kDir / "tree/b/z.txt").string(), single});
  CHECK_THROWS_WITH(text_files({(kDir / "nowhere").string()}), Catch::Matchers::Contains("does not exist"));
}
