#include "kiln/data/document_stream.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "kiln/base/error.h"

namespace fs = std::filesystem;

namespace kiln::data {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_json_lines(std::string_view path) {
  if (ends_with(path, ".gz")) path.remove_suffix(3);
  return ends_with(path, ".jsonl");
}

}  // namespace

// Lines of one file through zlib, which reads plain files as they are.
class DocumentStream::Reader {
 public:
  static constexpr size_t kBuffer = 256 << 10;

  explicit Reader(const std::string& path) : path_(path), buffer_(kBuffer) {
    KILN_CHECK(file_ != nullptr, "[data] cannot open {}", path);
    gzbuffer(file_.get(), kBuffer);
    fill();
  }

  // What the first buffer holds, to tell a file's kind.
  std::string_view head() const { return {buffer_.data() + begin_, end_ - begin_}; }

  // The next line without its "\n" (and "\r"); false at the end of the
  // file. Of a line longer than `most` bytes, the first `most` (overlong set).
  bool getline(std::string& line, size_t most, bool& overlong) {
    line.clear();
    overlong = false;
    length_ = 0;
    const auto take = [&](const char* from, size_t n) {
      length_ += n;
      const size_t room = most - line.size();
      overlong = overlong || n > room;
      line.append(from, std::min(n, room));
    };
    while (true) {
      const char* start = buffer_.data() + begin_;
      const char* newline = static_cast<const char*>(memchr(start, '\n', end_ - begin_));
      if (newline) {
        take(start, static_cast<size_t>(newline - start));
        begin_ += newline - start + 1;
        break;
      }
      take(start, end_ - begin_);
      begin_ = end_;
      if (!fill()) {
        if (line.empty() && !partial_) return false;
        break;
      }
      partial_ = true;
    }
    partial_ = false;
    if (!line.empty() && line.back() == '\r' && !overlong) line.pop_back();
    ++line_;
    return true;
  }

  int64_t line_number() const { return line_; }  // of the line getline returned last
  int64_t line_length() const { return static_cast<int64_t>(length_); }  // its whole length, past `most` too
  int64_t offset() const { return gzoffset(file_.get()); }  // bytes of the stored file consumed
  const std::string& path() const { return path_; }

 private:
  bool fill() {
    const int n = gzread(file_.get(), buffer_.data(), static_cast<unsigned>(buffer_.size()));
    int code = Z_OK;
    const char* message = gzerror(file_.get(), &code);
    // A cut gzip file reads to its end, then says so as Z_BUF_ERROR.
    KILN_CHECK(n >= 0 && code == Z_OK, "[data] cannot read {}", message);  // zlib names the file
    begin_ = 0;
    end_ = static_cast<size_t>(n);
    return n > 0;
  }

  std::string path_;
  // Closed however the reader ends, a constructor that raises included.
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file_{gzopen(path_.c_str(), "rb"), gzclose};
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;
  bool partial_ = false;  // a line began in an earlier buffer
  int64_t line_ = 0;
  size_t length_ = 0;
};

DocumentStream::DocumentStream(std::vector<std::string> files, DocumentStreamOptions options)
    : files_(std::move(files)), options_(std::move(options)) {
  for (const std::string& f : files_) {
    std::error_code error;
    const auto size = fs::file_size(f, error);
    KILN_CHECK(!error, "[data] cannot read {}: {}", f, error.message());
    sizes_.push_back(static_cast<int64_t>(size));
    bytes_total_ += sizes_.back();
  }
}

DocumentStream::~DocumentStream() = default;

bool DocumentStream::next(StreamedDocument& doc) {
  for (; file_ < files_.size(); ++file_, index_ = 0) {
    if (!reader_) {
      reader_ = std::make_unique<Reader>(files_[file_]);
      json_ = is_json_lines(files_[file_]);
      const std::string_view head = reader_->head();
      fortune_ = head.starts_with("%\n") || head.starts_with("%\r\n") || head.find("\n%\n") != head.npos ||
                 head.find("\n%\r\n") != head.npos;
      ended_ = false;
    }
    doc.too_long = false;
    if (json_ ? read_json_line(doc) : read_plain(doc)) {
      doc.file = file_;
      doc.index = index_++;
      return true;
    }
    bytes_done_ += sizes_[file_];
    reader_.reset();
  }
  return false;
}

size_t DocumentStream::most() const {
  return options_.max_document_bytes > 0 ? static_cast<size_t>(options_.max_document_bytes) : SIZE_MAX - 1;
}

bool DocumentStream::read_plain(StreamedDocument& doc) {
  if (ended_) return false;
  doc.text.clear();
  doc.bytes = 0;
  bool overlong = false;
  while (reader_->getline(line_, most(), overlong)) {
    if (!overlong && (fortune_ ? line_ == "%" : line_.empty() && !options_.whole_files)) return true;
    doc.bytes += reader_->line_length() + 1;
    doc.too_long = doc.too_long || overlong || doc.text.size() + line_.size() + 1 > most();
    if (doc.too_long) {
      doc.text.clear();
    } else {
      doc.text += line_;
      doc.text += '\n';
    }
  }
  ended_ = true;  // the text after the last boundary is the file's last document
  return true;
}

bool DocumentStream::read_json_line(StreamedDocument& doc) {
  bool overlong = false;
  // A JSON line holds its document and some syntax: it may run a little past the bound.
  const size_t line_most = most() < SIZE_MAX / 2 ? 2 * most() + 4096 : most();
  while (reader_->getline(line_, line_most, overlong)) {
    doc.bytes = reader_->line_length();
    if (overlong) {
      doc.text.clear();
      doc.too_long = true;
      return true;
    }
    if (line_.find_first_not_of(" \t") == std::string::npos) continue;
    const auto bad = [&](const std::string& what) {
      KILN_FAIL("[data] {}:{}: {}", files_[file_], reader_->line_number(), what);
    };
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line_);
    } catch (const nlohmann::json::exception& e) {
      bad(fmt::format("not JSON: {}", e.what()));
    }
    if (!record.is_object()) bad("each line must be a JSON object");
    const auto field = record.find(options_.text_field);
    if (field == record.end()) bad(fmt::format("no \"{}\" field", options_.text_field));
    if (!field->is_string()) bad(fmt::format("\"{}\" must be a string", options_.text_field));
    doc.text = field->get<std::string>();
    doc.bytes = static_cast<int64_t>(doc.text.size());
    if (static_cast<size_t>(doc.text.size()) > most()) {
      doc.text.clear();
      doc.too_long = true;
    }
    return true;
  }
  return false;
}

int64_t DocumentStream::bytes_read() const {
  return bytes_done_ + (reader_ ? std::min<int64_t>(reader_->offset(), sizes_[file_]) : 0);
}

std::vector<std::string> text_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    KILN_CHECK(fs::exists(in), "[data] input {} does not exist", in);
    if (fs::is_regular_file(in)) {
      files.push_back(in);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(in)) {
      if (!e.is_regular_file()) continue;
      const std::string ext = e.path().extension().string();
      if (ext == ".dat" || ext == ".u8") continue;
      found.push_back(e.path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  KILN_CHECK(!files.empty(), "[data] no text files found in the inputs");
  return files;
}

}  // namespace kiln::data
