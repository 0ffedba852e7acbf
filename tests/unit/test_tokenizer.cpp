// Tokenizers: llama.cpp's vocabulary test vectors (GGUF vocabularies, and tokenizer.json files
// rebuilt from the same vocabularies), SentencePiece, llama2.c tokenizer.bin, streaming decode and
// errors on corrupt files.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <unordered_map>

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

std::string vocab_path(const std::string& name) { return test::shared_dir() + "/" + kVocabDir + "/ggml-vocab-" + name + ".gguf"; }

std::unique_ptr<Tokenizer> must_load(const std::string& path, const TokenizerOptions& options = {}) {
  auto tok = load_tokenizer(path, options);
  EXPECT_TRUE(tok.has_value()) << tok.status().to_string();
  return tok.has_value() ? std::move(tok).value() : nullptr;
}

// Byte-level BPE and SentencePiece with byte fallback are lossless: decoding gives the input back.
TEST(GgufTokenizer, LosslessVocabsDecodeToTheInput) {
  for (const char* name : {"llama-spm", "phi-3", "gpt-2"}) {
    QFORGE_REQUIRE_SHARED(std::string(kVocabDir) + "/ggml-vocab-" + name + ".gguf");
    auto tok = must_load(vocab_path(name));
    ASSERT_TRUE(tok);
    for (const VocabCase& c : read_vocab_cases(vocab_path(name))) {
      const std::vector<int32_t> ids = tok->encode(c.input);
      EXPECT_EQ(tok->decode(ids), c.input) << name << ": \"" << escaped(c.input) << "\" ids [" << ids_str(ids) << "]";
      // With BOS in front the leading space is dropped the same way.
      const std::vector<int32_t> with_bos = tok->encode(c.input, /*add_special=*/true);
      EXPECT_EQ(tok->decode(with_bos), c.input) << name << " with BOS: \"" << escaped(c.input) << "\"";
    }
  }
}

TEST(GgufTokenizer, SpecialTokensAndMetadata) {
  QFORGE_REQUIRE_SHARED(std::string(kVocabDir) + "/ggml-vocab-gpt-2.gguf");
  auto spm = must_load(vocab_path("llama-spm"));
  ASSERT_TRUE(spm);
  EXPECT_EQ(spm->type_name(), "gguf-spm");
  EXPECT_EQ(spm->vocab_size(), 32000);
  EXPECT_EQ(spm->bos_id(), 1);
  EXPECT_EQ(spm->eos_id(), 2);
  EXPECT_EQ(spm->unk_id(), 0);
  EXPECT_FALSE(spm->pad_id().has_value());
  EXPECT_TRUE(spm->adds_bos());
  EXPECT_FALSE(spm->adds_eos());
  EXPECT_EQ(spm->token_kind(1), TokenKind::control);
  EXPECT_EQ(spm->token_kind(3), TokenKind::byte);
  EXPECT_EQ(spm->token_text(3), "<0x00>");
  EXPECT_EQ(spm->token_to_piece(3 + '\n'), "\n");
  EXPECT_EQ(spm->token_to_piece(1), "");
  EXPECT_EQ(spm->token_to_piece(1, /*render_special=*/true), "<s>");
  EXPECT_EQ(spm->token_to_piece(-1), "");
  EXPECT_EQ(spm->token_to_piece(32000), "");
  EXPECT_EQ(spm->find_token("<s>"), 1);
  EXPECT_FALSE(spm->find_token("no such token").has_value());
  const std::vector<int32_t> hello = spm->encode("Hello world");
  std::vector<int32_t> with_bos = {1};
  with_bos.insert(with_bos.end(), hello.begin(), hello.end());
  EXPECT_EQ(spm->encode("Hello world", /*add_special=*/true), with_bos);
  // "<s>" in the text is the control token only when asked for.
  EncodeOptions parse;
  parse.parse_special = true;
  const std::vector<int32_t> parsed = spm->encode("<s>Hi", parse);
  ASSERT_FALSE(parsed.empty());
  EXPECT_EQ(parsed[0], 1);
  EXPECT_NE(spm->encode("<s>Hi")[0], 1);

  auto gpt2 = must_load(vocab_path("gpt-2"));
  ASSERT_TRUE(gpt2);
  EXPECT_EQ(gpt2->type_name(), "gguf-bpe");
  EXPECT_EQ(gpt2->eos_id(), 50256);
  EXPECT_FALSE(gpt2->adds_bos());
  EXPECT_EQ(gpt2->encode("a<|endoftext|>b", parse), (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_GT(gpt2->encode("a<|endoftext|>b").size(), 3u);
  EXPECT_EQ(gpt2->token_to_piece(18435), " Hello");  // "ĠHello"

  auto bert = must_load(vocab_path("bert-bge"));
  ASSERT_TRUE(bert);
  EXPECT_EQ(bert->type_name(), "gguf-wordpiece");
  EXPECT_EQ(bert->bos_id(), 101);  // [CLS]
  EXPECT_EQ(bert->eos_id(), 102);  // [SEP]
  EXPECT_EQ(bert->unk_id(), 100);
  EXPECT_EQ(bert->pad_id(), 0);
  EXPECT_EQ(bert->encode("Hello world", true), (std::vector<int32_t>{101, 7592, 2088, 102}));
  EXPECT_EQ(bert->decode(bert->encode("Hello, world!")), "hello , world !");
}

// A GGUF file with a vocabulary but an unsupported tokenizer model, or broken arrays.
TEST(GgufTokenizer, RejectsUnsupportedAndInconsistentMetadata) {
  const std::string dir = test::temp_dir();
  auto write = [&](const std::string& name, auto&& fill) {
    GgufWriter w(dir + "/" + name);
    EXPECT_TRUE(w.set_string("general.architecture", "llama").is_ok());
    fill(w);
    EXPECT_TRUE(w.finish().is_ok());
    return dir + "/" + name;
  };
  const std::string rwkv = write("rwkv.gguf", [](GgufWriter& w) {
    EXPECT_TRUE(w.set_string("tokenizer.ggml.model", "rwkv").is_ok());
    EXPECT_TRUE(w.set_string_array("tokenizer.ggml.tokens", {"a", "b"}).is_ok());
  });
  auto r = load_tokenizer(rwkv);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find(rwkv), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("'rwkv'"), std::string::npos) << r.status().message();

  const std::string scores = write("scores.gguf", [](GgufWriter& w) {
    EXPECT_TRUE(w.set_string("tokenizer.ggml.model", "llama").is_ok());
    EXPECT_TRUE(w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"}).is_ok());
    EXPECT_TRUE(w.set("tokenizer.ggml.scores", GgufValue::array(std::vector<float>{0.f, 0.f})).is_ok());
  });
  r = load_tokenizer(scores);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("tokenizer.ggml.scores"), std::string::npos) << r.status().message();

  const std::string bad_bos = write("bos.gguf", [](GgufWriter& w) {
    EXPECT_TRUE(w.set_string("tokenizer.ggml.model", "llama").is_ok());
    EXPECT_TRUE(w.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"}).is_ok());
    EXPECT_TRUE(w.set_u32("tokenizer.ggml.bos_token_id", 7).is_ok());
  });
  r = load_tokenizer(bad_bos);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("bos_token_id"), std::string::npos) << r.status().message();

  const std::string pre = write("pre.gguf", [](GgufWriter& w) {
    EXPECT_TRUE(w.set_string("tokenizer.ggml.model", "gpt2").is_ok());
    EXPECT_TRUE(w.set_string("tokenizer.ggml.pre", "made-up").is_ok());
    EXPECT_TRUE(w.set_string_array("tokenizer.ggml.tokens", {"a", "b"}).is_ok());
    EXPECT_TRUE(w.set_string_array("tokenizer.ggml.merges", {"a b"}).is_ok());
  });
  r = load_tokenizer(pre);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("made-up"), std::string::npos) << r.status().message();
}

// --- tokenizer.json, rebuilt from the GGUF vocabularies -------------------------------------

nlohmann::json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

// GPT-2's tokenizer.json layout.
std::string gpt2_tokenizer_json(const GgufFile& f) {
  nlohmann::json vocab = nlohmann::json::object();
  auto tokens = *f.get_array<std::string>("tokenizer.ggml.tokens");
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  nlohmann::json merges = nlohmann::json::array();
  for (const std::string& m : *f.get_array<std::string>("tokenizer.ggml.merges")) merges.push_back(m);
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", {added_token(50256, "<|endoftext|>", true)}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

// BERT's tokenizer.json: llama.cpp's converter wrote word starts as "▁word" and continuations
// without "##"; undo that to get the original WordPiece vocabulary back.
std::string bert_tokenizer_json(const GgufFile& f) {
  const std::string mark = "\xE2\x96\x81";
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  auto tokens = *f.get_array<std::string>("tokenizer.ggml.tokens");
  auto types = *f.get_int_array("tokenizer.ggml.token_type");
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    std::string original;
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
      original = t;
    } else if (t.compare(0, mark.size(), mark) == 0) {
      original = t.substr(mark.size());
    } else {
      original = "##" + t;
    }
    vocab[original] = i;
    if (types[i] == 3) added.push_back(added_token(static_cast<int32_t>(i), t, true));
  }
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true}, {"strip_accents", nullptr},
        {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor", {{"type", "BertProcessing"}, {"sep", {"[SEP]", 102}}, {"cls", {"[CLS]", 101}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model",
       {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
        {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
  return j.dump();
}

// Llama-2's tokenizer.json: BPE with byte fallback, merges derived from the SentencePiece scores
// as transformers' converter does (every split of a piece into two pieces, ordered by the
// merged piece's score).
std::string llama_tokenizer_json(const GgufFile& f) {
  auto tokens = *f.get_array<std::string>("tokenizer.ggml.tokens");
  auto scores = *f.get_float_array("tokenizer.ggml.scores");
  auto types = *f.get_int_array("tokenizer.ggml.token_type");
  std::unordered_map<std::string, size_t> id;
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    id.emplace(tokens[i], i);
  }
  struct Merge {
    size_t l, r;
    float score;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] != 1) continue;
    const std::string& t = tokens[i];
    std::vector<Merge> local;
    for (size_t cut = 1; cut < t.size(); ++cut) {
      if ((static_cast<uint8_t>(t[cut]) & 0xC0) == 0x80) continue;  // inside a character
      auto l = id.find(t.substr(0, cut)), r = id.find(t.substr(cut));
      if (l != id.end() && r != id.end()) local.push_back({l->second, r->second, scores[i]});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) { return std::tie(a.l, a.r) < std::tie(b.l, b.r); });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });
  nlohmann::json merge_list = nlohmann::json::array();
  for (const Merge& m : merges) merge_list.push_back({tokens[m.l], tokens[m.r]});
  const std::string mark = "\xE2\x96\x81";
  nlohmann::json normalizer = {{"type", "Sequence"}, {"normalizers", nlohmann::json::array()}};
  normalizer["normalizers"].push_back({{"type", "Prepend"}, {"prepend", mark}});
  normalizer["normalizers"].push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", mark}});
  nlohmann::json post = {{"type", "TemplateProcessing"}, {"single", nlohmann::json::array()}, {"pair", nlohmann::json::array()}};
  post["single"].push_back({{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}});
  post["single"].push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  post["special_tokens"]["<s>"] = {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}};
  nlohmann::json decoder = {{"type", "Sequence"}, {"decoders", nlohmann::json::array()}};
  decoder["decoders"].push_back({{"type", "Replace"}, {"pattern", {{"String", mark}}}, {"content", " "}});
  decoder["decoders"].push_back({{"type", "ByteFallback"}});
  decoder["decoders"].push_back({{"type", "Fuse"}});
  decoder["decoders"].push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  nlohmann::json added = nlohmann::json::array();
  for (int32_t i = 0; i < 3; ++i) added.push_back(added_token(i, tokens[static_cast<size_t>(i)], true));
  nlohmann::json j = {{"version", "1.0"}, {"added_tokens", added},   {"normalizer", normalizer},
                      {"pre_tokenizer", nullptr}, {"post_processor", post}, {"decoder", decoder}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
                {"merges", merge_list}};
  return j.dump();
}

class HfJsonVocabTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfJsonVocabTest, EncodesLlamaCppVectors) {
  const std::string name = GetParam();
  QFORGE_REQUIRE_SHARED(std::string(kVocabDir) + "/ggml-vocab-" + name + ".gguf");
  auto f = GgufFile::open(vocab_path(name));
  ASSERT_TRUE(f.has_value()) << f.status().to_string();
  const std::string json = name == "gpt-2" ? gpt2_tokenizer_json(*f)
                           : name == "bert-bge" ? bert_tokenizer_json(*f)
                                                : llama_tokenizer_json(*f);
  // Through load_tokenizer on a file, so the path-based dispatch is covered too.
  const std::string path = test::temp_dir() + "/tokenizer.json";
  write_all(path, json);
  auto tok = must_load(path);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->type_name(), name == "bert-bge" ? "hf-wordpiece" : "hf-bpe");
  const std::vector<VocabCase> cases = read_vocab_cases(vocab_path(name));
  check_vectors(*tok, cases, "tokenizer.json " + name);
  if (name != "bert-bge") {
    for (const VocabCase& c : cases) EXPECT_EQ(tok->decode(tok->encode(c.input)), c.input) << escaped(c.input);
  }
  if (name == "bert-bge") {
    EXPECT_EQ(tok->encode("Hello world", true), (std::vector<int32_t>{101, 7592, 2088, 102}));
    EXPECT_EQ(tok->bos_id(), 101);
    EXPECT_EQ(tok->eos_id(), 102);
    EXPECT_EQ(tok->unk_id(), 100);
  } else if (name == "llama-spm") {
    EXPECT_EQ(tok->encode("Hello", true).front(), 1);
    EXPECT_EQ(tok->bos_id(), 1);
    EXPECT_EQ(tok->token_kind(3), TokenKind::byte);
  } else {
    EXPECT_FALSE(tok->adds_bos());
    EncodeOptions parse;
    parse.parse_special = true;
    EXPECT_EQ(tok->encode("a<|endoftext|>b", parse), (std::vector<int32_t>{64, 50256, 65}));
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, HfJsonVocabTest, ::testing::Values("gpt-2", "bert-bge", "llama-spm"));

}  // namespace
}  // namespace qforge
