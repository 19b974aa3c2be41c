// How engramctl prints results: JSON lines, one object per line, for
// scripts and pipes; or an aligned table for a person at a terminal (the
// default when stdout is one). Every command hands its results to one
// Output as JSON objects, so both forms always carry the same fields.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace google::protobuf {
class Message;
}

namespace engram::cli {

enum class OutputFormat { kJson, kTable };

class Output {
 public:
  explicit Output(OutputFormat format) : format_(format) {}
  ~Output() { Flush(); }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  OutputFormat format() const { return format_; }
  // One result: printed at once as a JSON line, or kept for the table.
  void Add(const nlohmann::ordered_json& row);
  // A message, with its proto field names (as the JSON mapping spells them).
  void Add(const google::protobuf::Message& message);
  // Prints the table of the rows kept so far: one row as "field  value"
  // lines, several as columns (the union of their fields, in first-seen
  // order). Long values are shortened, vectors summarised.
  void Flush();

 private:
  OutputFormat format_;
  std::vector<nlohmann::ordered_json> rows_;
};

// A table's rendering of one value: strings as they are (one line, at most
// `width` characters), numeric arrays as their first values and length.
std::string FormatCell(const nlohmann::ordered_json& value, size_t width = 60);

}  // namespace engram::cli
