#include "embed/embedder.h"
#include "embed/openai_embedder.h"
#include "embed/static_embedder.h"

namespace engram::embed {

absl::StatusOr<std::unique_ptr<Embedders>> Embedders::Create(const EmbedderOptions& options) {
  auto embedders = std::make_unique<Embedders>();
  if (!options.static_vectors.path.empty()) {
    absl::StatusOr<std::unique_ptr<StaticEmbedder>> loaded =
        StaticEmbedder::Load(options.static_vectors.path);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedders.static.path: ", loaded.status().message()));
    }
    embedders->Add(std::move(*loaded));
  }
  if (!options.openai.url.empty()) {
    absl::StatusOr<std::unique_ptr<OpenAiEmbedder>> endpoint =
        OpenAiEmbedder::Create(options.openai);
    if (!endpoint.ok()) return endpoint.status();
    embedders->Add(std::move(*endpoint));
  }
  return embedders;
}

Embedder* Embedders::Find(const std::string& name) const {
  auto found = by_name_.find(name);
  return found == by_name_.end() ? nullptr : found->second.get();
}

std::vector<std::string> Embedders::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, embedder] : by_name_) names.push_back(name);
  return names;
}

void Embedders::Add(std::unique_ptr<Embedder> embedder) {
  std::string name = embedder->name();
  by_name_[name] = std::move(embedder);
}

}  // namespace engram::embed
