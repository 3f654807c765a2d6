#pragma once
// DocumentStream: the documents of many text files, read one at a time, so a
// corpus larger than memory streams through. A file's name says its format:
// "*.jsonl" holds JSON lines, each an object whose text field is one
// document; any other file is plain text, split as split_documents splits it
// (fortune files at lines holding only "%", other text at blank lines, unless
// whole_files; a file is a fortune file when a "%" line comes in its first
// buffer). A ".gz" suffix
// after either is decompressed as it is read (zlib). Memory: one document and
// one buffer; a document past max_document_bytes (a PostScript file without a
// blank line, a JSON line of megabytes) is read through without being held.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::data {

// How JSON lines are read.
struct DocumentStreamOptions {
  std::string text_field = "text";  // the field of each JSON line that holds its document
  int64_t max_document_bytes = 0;   // longer documents come back empty, marked too_long; 0: no bound
  bool whole_files = false;         // a plain file other than a fortune file is one document
};

// One document and where it came from.
struct StreamedDocument {
  std::string text;      // as the file holds it (not cleaned; may be empty)
  size_t file = 0;       // its file's index in the stream's list
  int64_t index = 0;     // its place among that file's documents, from 0
  bool too_long = false;  // past max_document_bytes: text is empty
  int64_t bytes = 0;      // its length as read (its JSON line's, when too long for JSON)
};

// Documents of files, in the order the files are listed; raises kiln::Error
// naming the file (and line, for JSON) when one is missing or malformed.
class DocumentStream {
 public:
  // Checks that every file exists (its size counts toward bytes_total); opens none yet.
  explicit DocumentStream(std::vector<std::string> files, DocumentStreamOptions options = {});
  ~DocumentStream();
  DocumentStream(const DocumentStream&) = delete;
  DocumentStream& operator=(const DocumentStream&) = delete;

  // The next document into doc; false once every file is read.
  bool next(StreamedDocument& doc);

  // Bytes of the files (as stored: compressed for ".gz") read so far, and in all.
  int64_t bytes_read() const;
  int64_t bytes_total() const { return bytes_total_; }
  const std::vector<std::string>& files() const { return files_; }  // as given

 private:
  class Reader;
  bool read_plain(StreamedDocument& doc);
  bool read_json_line(StreamedDocument& doc);
  size_t most() const;  // bytes a document may hold

  std::vector<std::string> files_;
  DocumentStreamOptions options_;
  std::vector<int64_t> sizes_;  // of each file, as stored
  std::unique_ptr<Reader> reader_;  // of file_, once opened
  size_t file_ = 0;                 // the file being read (files_.size() when done)
  int64_t index_ = 0;               // documents of it returned so far
  bool json_ = false;               // file_ holds JSON lines
  bool fortune_ = false;            // file_ is a fortune file
  bool ended_ = false;              // file_'s last plain document is returned
  std::string line_;                // the line being read
  int64_t bytes_total_ = 0;
  int64_t bytes_done_ = 0;  // of the files before file_
};

// The text files under each input (directories recursively, in name order;
// fortune index files, *.dat and *.u8, left out), the inputs in the order
// given; raises when an input is missing or none holds a file.
std::vector<std::string> text_files(const std::vector<std::string>& inputs);

}  // namespace kiln::data
