#include "clients/cli/output.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace engram::cli {
namespace {

// Characters, not bytes, of UTF-8 text: what a terminal column holds
// (wide scripts aside).
size_t DisplayWidth(const std::string& text) {
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

// The first `width` characters of UTF-8 text, "…" marking a cut.
std::string Shorten(const std::string& text, size_t width) {
  if (DisplayWidth(text) <= width) return text;
  size_t chars = 0, end = 0;
  for (; end < text.size(); ++end) {
    if ((static_cast<unsigned char>(text[end]) & 0xC0) != 0x80 && ++chars == width) break;
  }
  return text.substr(0, end) + "…";
}

std::string Pad(const std::string& text, size_t width) {
  return text + std::string(width - std::min(width, DisplayWidth(text)), ' ');
}

}  // namespace

std::string FormatCell(const nlohmann::ordered_json& value, size_t width) {
  std::string text;
  if (value.is_string()) {
    text = value.get<std::string>();
  } else if (value.is_number_float()) {
    text = absl::StrFormat("%.6g", value.get<double>());
  } else if (value.is_array() && !value.empty() &&
             std::all_of(value.begin(), value.end(),
                         [](const nlohmann::ordered_json& v) { return v.is_number(); })) {
    std::vector<std::string> head;
    for (size_t i = 0; i < std::min<size_t>(value.size(), 3); ++i) head.push_back(value[i].dump());
    text = absl::StrCat("[", absl::StrJoin(head, ", "), value.size() > 3 ? ", …]" : "]",
                        value.size() > 3 ? absl::StrCat(" (", value.size(), ")") : "");
  } else {
    text = value.dump();
  }
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\t', ' ');
  return Shorten(text, width);
}

void Output::Add(const nlohmann::ordered_json& row) {
  if (format_ == OutputFormat::kJson) {
    std::cout << row.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  } else {
    rows_.push_back(row);
  }
}

void Output::Add(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  if (format_ == OutputFormat::kJson) {
    std::cout << json << "\n";  // as printed before tables existed, byte for byte
    return;
  }
  rows_.push_back(nlohmann::ordered_json::parse(json, nullptr, /*allow_exceptions=*/false));
}

void Output::Flush() {
  if (rows_.empty()) return;
  if (rows_.size() == 1 && rows_[0].is_object()) {
    size_t key_width = 0;
    for (const auto& [key, value] : rows_[0].items()) key_width = std::max(key_width, key.size());
    for (const auto& [key, value] : rows_[0].items()) {
      std::cout << Pad(key, key_width) << "  " << FormatCell(value, 100) << "\n";
    }
    rows_.clear();
    return;
  }
  std::vector<std::string> columns;
  for (const nlohmann::ordered_json& row : rows_) {
    if (!row.is_object()) continue;
    for (const auto& [key, value] : row.items()) {
      if (std::find(columns.begin(), columns.end(), key) == columns.end()) columns.push_back(key);
    }
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths;
  for (const std::string& column : columns) widths.push_back(DisplayWidth(column));
  for (const nlohmann::ordered_json& row : rows_) {
    std::vector<std::string>& line = cells.emplace_back();
    for (size_t c = 0; c < columns.size(); ++c) {
      auto found = row.is_object() ? row.find(columns[c]) : row.end();
      line.push_back(found == row.end() ? "" : FormatCell(*found));
      widths[c] = std::max(widths[c], DisplayWidth(line.back()));
    }
  }
  auto print = [&](const std::vector<std::string>& line) {
    std::string out;
    for (size_t c = 0; c < line.size(); ++c) {
      absl::StrAppend(&out, c + 1 == line.size() ? line[c] : Pad(line[c], widths[c] + 2));
    }
    std::cout << out << "\n";
  };
  print(columns);
  for (const std::vector<std::string>& line : cells) print(line);
  rows_.clear();
}

}  // namespace engram::cli
