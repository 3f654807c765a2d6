#pragma once
// Text files as documents: fortune files (Debian's fortunes) separate them by
// lines holding only "%", other text by blank lines. Shared by prepare_data's
// corpus and the fine-tuning tasks built from the same files.

#include <string>
#include <vector>

namespace kiln::data {

// The documents of one file's text, as they stand (empty ones included).
std::vector<std::string> split_documents(const std::string& text);

// A document with CRLF made LF, trailing spaces and tabs removed from every
// line and blank lines removed at both ends ("" when nothing is left).
std::string clean_document(const std::string& doc);

}  // namespace kiln::data
