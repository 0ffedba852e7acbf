// Tokenizers: llama.cpp's vocabulary test vectors (GGUF vocabularies, and tokenizer.json files
// rebuilt from the same vocabularies), SentencePiece, llama2.c tokenizer.bin, streaming decode and
// errors on corrupt files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/tokenizer_impl.h"
#include "model/tokenizer_unicode.h"
#include "qforge/gguf.h"
#include "qforge/tokenizer.h"
#include "test_support.h"

namespace qforge {
namespace {

const char* const kVocabDir = "tokenizers/llama.cpp-vocab";

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct VocabCase {
  std::string input;
  std::vector<int32_t> expected;
};

// llama.cpp's test-tokenizer-0 format: the .inp file is the inputs joined by
// "\n__ggml_vocab_test__\n" (the file ends with that separator), the .out file one line of ids per input.
std::vector<VocabCase> read_vocab_cases(const std::string& base) {
  const std::string inp = read_all(base + ".inp");
  const std::string out = read_all(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0;;) {
    const size_t at = inp.find(sep, pos);
    if (at == std::string::npos) {
      EXPECT_EQ(pos, inp.size()) << base << ".inp: text after the last separator";
      break;
    }
    inputs.push_back(inp.substr(pos, at - pos));
    pos = at + sep.size();
  }
  std::vector<std::vector<int32_t>> outputs;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ids(line);
    std::vector<int32_t> v;
    for (int32_t id; ids >> id;) v.push_back(id);
    outputs.push_back(std::move(v));
  }
  EXPECT_EQ(inputs.size(), outputs.size()) << base << ": inputs and expected outputs differ in count";
  std::vector<VocabCase> cases;
  for (size_t i = 0; i < std::min(inputs.size(), outputs.size()); ++i) cases.push_back({inputs[i], outputs[i]});
  return cases;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

std::string escaped(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out;
}

// Runs every vector through `tok`; reports each failure with input, expected and actual ids.
void check_vectors(const Tokenizer& tok, const std::vector<VocabCase>& cases, const std::string& what) {
  ASSERT_FALSE(cases.empty());
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<int32_t> got = tok.encode(cases[i].input);
    if (got != cases[i].expected) {
      ++failures;
      ADD_FAILURE() << what << " vector " << i << " input \"" << escaped(cases[i].input) << "\"\n  expected: ["
                    << ids_str(cases[i].expected) << "]\n  actual:   [" << ids_str(got) << "]";
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << cases.size() << " vectors differ";
}

class GgufVocabTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufVocabTest, EncodesLlamaCppVectors) {
  const std::string rel = std::string(kVocabDir) + "/ggml-vocab-" + GetParam() + ".gguf";
  QFORGE_REQUIRE_SHARED(rel);
  const std::string path = test::shared_dir() + "/" + rel;
  auto tok = load_tokenizer(path);
  ASSERT_TRUE(tok.has_value()) << tok.status().to_string();
  check_vectors(**tok, read_vocab_cases(path), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Vocabs, GgufVocabTest, ::testing::Values("llama-spm", "phi-3", "gpt-2", "bert-bge"));

}  // namespace
}  // namespace qforge
