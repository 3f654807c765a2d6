#include "kiln/data/documents.h"

#include <sstream>

namespace kiln::data {

std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> docs;
  const bool fortune = text.rfind("%\n", 0) == 0 || text.find("\n%\n") != std::string::npos;
  std::stringstream ss(text);
  std::string current;
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool boundary = fortune ? line == "%" : line.empty();
    if (boundary) {
      docs.push_back(current);
      current.clear();
    } else {
      current += line + "\n";
    }
  }
  docs.push_back(current);
  return docs;
}

std::string clean_document(const std::string& doc) {
  std::vector<std::string> lines;
  std::stringstream ss(doc);
  for (std::string line; std::getline(ss, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  size_t first = 0;
  while (first < lines.size() && lines[first].empty()) ++first;
  std::string out;
  for (size_t i = first; i < lines.size(); ++i) out += (i > first ? "\n" : "") + lines[i];
  return out;
}

}  // namespace kiln::data
