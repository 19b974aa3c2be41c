// Without libFuzzer: replays every file of the seed corpus directories given
// on the command line, then `ENGRAM_FUZZ_ITERATIONS` (default 200000) random
// mutations of them, through LLVMFuzzerTestOneInput. Deterministic seed.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> corpus;
  for (int i = 1; i < argc; ++i) {
    for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
      std::ifstream file(entry.path(), std::ios::binary);
      std::stringstream bytes;
      bytes << file.rdbuf();
      corpus.push_back(bytes.str());
    }
  }
  if (corpus.empty()) corpus.push_back(std::string(1, '\0'));
  for (const std::string& input : corpus) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  long iterations = 200000;
  if (const char* env = std::getenv("ENGRAM_FUZZ_ITERATIONS")) iterations = std::atol(env);
  std::mt19937 rng(1234);
  for (long i = 0; i < iterations; ++i) {
    std::string input = corpus[rng() % corpus.size()];
    for (int edits = 1 + rng() % 8; edits > 0; --edits) {
      size_t pos = input.empty() ? 0 : rng() % input.size();
      switch (rng() % 3) {
        case 0:
          if (!input.empty()) input[pos] = static_cast<char>(rng());
          break;
        case 1:
          input.insert(input.begin() + pos, static_cast<char>(rng()));
          break;
        case 2:
          if (!input.empty()) input.erase(pos, 1 + rng() % 4);
          break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::cout << "replayed " << corpus.size() << " seeds and " << iterations << " mutations\n";
  return 0;
}
