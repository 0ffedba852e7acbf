// Tokenizers: llama.cpp's vocabulary test vectors (GGUF vocabularies, and tokenizer.json files
// rebuilt from the same vocabularies), SentencePiece, llama2.c tokenizer.bin, streaming decode and
// errors on corrupt files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
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

TEST(HfTokenizer, RejectsMalformedAndUnsupportedFiles) {
  const std::string dir = test::temp_dir();
  struct Case {
    const char* name;
    const char* json;
    const char* expect;  // in the message besides the file name
  };
  const Case cases[] = {
      {"truncated.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", "malformed JSON"},
      {"array.json", "[1, 2]", "not a JSON object"},
      {"nomodel.json", "{\"version\": \"1.0\"}", "'model'"},
      {"unigram.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": {}}}", "Unigram"},
      {"badid.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": -3}}}", "model.vocab['a']"},
      {"badmerge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "merges[0]"},
      {"pretok.json",
       "{\"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}, \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
       "UnicodeScripts"},
      {"regex.json",
       "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}, \"behavior\": \"Isolated\"}, "
       "\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
       "regex"},
      {"norm.json", "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "NFKC"},
      {"added.json",
       "{\"added_tokens\": [{\"id\": \"x\", \"content\": \"y\"}], \"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
       "added_tokens[0]"},
  };
  for (const Case& c : cases) {
    const std::string path = dir + "/" + c.name;
    write_all(path, c.json);
    auto tok = load_tokenizer(path);
    ASSERT_FALSE(tok.has_value()) << c.name << " loaded";
    EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().message();
    EXPECT_NE(tok.status().message().find(c.expect), std::string::npos) << tok.status().message();
  }
}

// Pre-tokenizers and normalizers on small hand-made vocabularies.
TEST(HfTokenizer, PipelinePieces) {
  nlohmann::json vocab = {{"[UNK]", 0}, {"hello", 1}, {"##s", 2}, {"!", 3}, {"12", 4}, {"1", 5}, {"2", 6}, {"cafe", 7}, {"é", 8}};
  nlohmann::json j = {{"model", {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", vocab}}},
                      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}, {{"type", "Lowercase"}}}}}},
                      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}, {{"type", "Digits"}, {"individual_digits", true}}}}}}};
  auto tok = parse_hf_tokenizer_json(j.dump(), "mem.json");
  ASSERT_TRUE(tok.has_value()) << tok.status().to_string();
  // "Café" -> NFD -> accents stripped -> lowercase; digits split one by one; "!" its own word.
  EXPECT_EQ((*tok)->encode("HELLOs Café 12!"), (std::vector<int32_t>{1, 2, 7, 5, 6, 3}));
  EXPECT_EQ((*tok)->encode("xyz"), (std::vector<int32_t>{0}));
  EXPECT_EQ((*tok)->decode((*tok)->encode("hellos")), "hellos");

  // NFC composes "e" + U+0301 into "é".
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  tok = parse_hf_tokenizer_json(j.dump(), "mem.json");
  ASSERT_TRUE(tok.has_value()) << tok.status().to_string();
  EXPECT_EQ((*tok)->encode("e\xCC\x81"), (std::vector<int32_t>{8}));
}

// Llama-3 style: Split with the Llama-3 regex, ByteLevel without its own regex, ignore_merges.
TEST(HfTokenizer, Llama3StyleSplitAndIgnoreMerges) {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& chars = byte_level_chars();
  for (int b = 0; b < 256; ++b) vocab[chars[static_cast<size_t>(b)]] = b;
  vocab["Ġw"] = 256;
  vocab["Ġworld"] = 257;  // reachable only through ignore_merges (no merge chain builds it)
  vocab["123"] = 258;
  nlohmann::json merges = {"Ġ w"};
  nlohmann::json split = {{"type", "Split"}, {"pattern", {{"Regex", split_pattern_regex(SplitPattern::llama3)}}}, {"behavior", "Isolated"}, {"invert", false}};
  nlohmann::json bytelevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  nlohmann::json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", true}}},
                      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", {split, bytelevel}}}},
                      {"decoder", {{"type", "ByteLevel"}}},
                      {"added_tokens", {added_token(259, "<|begin_of_text|>", true)}},
                      {"post_processor", {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                          {"special_tokens", {{"<|begin_of_text|>", {{"ids", {259}}}}}}}}};
  auto tok = parse_hf_tokenizer_json(j.dump(), "llama3.json");
  ASSERT_TRUE(tok.has_value()) << tok.status().to_string();
  EXPECT_EQ((*tok)->vocab_size(), 260);
  // Words: " world" (in the vocabulary whole), " wx" (merge "Ġ w", then "x"), " ", "123" (whole), "4".
  const std::vector<int32_t> ids = (*tok)->encode(" world wx 1234", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{259, 257, 256, 'x', ' ', 258, '4'}));
  EXPECT_EQ((*tok)->bos_id(), 259);
  EXPECT_TRUE((*tok)->adds_bos());
  EXPECT_EQ((*tok)->decode(ids), " world wx 1234");
}

// --- SentencePiece ---------------------------------------------------------------------------

const char* const kRefModel = "models/ref-llama-25m";

TEST(SentencePieceTokenizer, RefModelMatchesLlamaVectorsAndRoundTrips) {
  QFORGE_REQUIRE_SHARED(std::string(kRefModel) + "/tokenizer.model");
  // The directory: tokenizer.model is picked, tokenizer_config.json says BOS is added.
  auto tok = must_load(test::shared_dir() + "/" + kRefModel);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->type_name(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_TRUE(tok->adds_bos());
  EXPECT_FALSE(tok->adds_eos());
  EXPECT_TRUE(tok->strips_leading_space());
  EXPECT_EQ(tok->token_kind(1), TokenKind::control);
  EXPECT_EQ(tok->token_kind(0), TokenKind::unknown);
  EXPECT_EQ(tok->token_kind(3 + 0x41), TokenKind::byte);
  EXPECT_EQ(tok->token_to_piece(3 + 0x41), "A");
  EXPECT_EQ(tok->find_token("<s>"), 1);
  EXPECT_FALSE(tok->find_token("certainly not a piece").has_value());

  const std::string sample = "def main():\n    print(\"Hello, world!\")  # 3 spaces   and émojis 🦙\n";
  const std::vector<int32_t> ids = tok->encode(sample, /*add_special=*/true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->decode(ids), sample);
  EXPECT_EQ(tok->decode(tok->encode(sample)), sample);

  // The same vocabulary as llama.cpp's llama-spm test file: the library must agree with the vectors.
  const std::string vocab_rel = std::string(kVocabDir) + "/ggml-vocab-llama-spm.gguf";
  QFORGE_REQUIRE_SHARED(vocab_rel);
  auto gguf = must_load(vocab_path("llama-spm"));
  ASSERT_TRUE(gguf);
  ASSERT_EQ(gguf->vocab_size(), tok->vocab_size());
  for (int32_t id = 0; id < tok->vocab_size(); ++id) ASSERT_EQ(gguf->token_text(id), tok->token_text(id)) << "id " << id;
  check_vectors(*tok, read_vocab_cases(vocab_path("llama-spm")), "sentencepiece");
  // And the GGUF implementation agrees with the library on a longer real text.
  const std::string heldout = read_all(test::shared_dir() + "/" + kRefModel + "/heldout.txt").substr(0, 20000);
  EXPECT_EQ(gguf->encode(heldout), tok->encode(heldout));
}

TEST(SentencePieceTokenizer, GarbageModelIsAnErrorNamingTheFile) {
  const std::string dir = test::temp_dir();
  std::string garbage(4096, '\0');
  uint32_t x = 12345;
  for (char& c : garbage) c = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
  for (const auto& [name, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"tokenizer.model", garbage}, {"empty.model", ""}, {"text.model", "this is not a protobuf"}}) {
    const std::string path = dir + "/" + name;
    write_all(path, bytes);
    auto tok = load_tokenizer(path);
    ASSERT_FALSE(tok.has_value()) << name << " loaded";
    EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().message();
  }
  if (test::shared_exists(std::string(kRefModel) + "/tokenizer.model")) {
    // A truncated copy of a real model.
    const std::string real = read_all(test::shared_dir() + "/" + kRefModel + "/tokenizer.model");
    const std::string path = dir + "/truncated.model";
    write_all(path, real.substr(0, real.size() / 2));
    auto tok = load_tokenizer(path);
    ASSERT_FALSE(tok.has_value());
    EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().message();
  }
}

// --- llama2.c tokenizer.bin ----------------------------------------------------------------

const char* const kTok512 = "models/stories260K/tok512.bin";

// run.c's encode() written the obvious way (rescan all pairs per merge), as the reference.
std::vector<int32_t> run_c_encode(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> t;
  std::unordered_map<std::string, int32_t> index;
  std::vector<float> scores;
  for (int32_t i = tok.vocab_size() - 1; i >= 0; --i) index[std::string(tok.token_text(i))] = i;  // first id wins
  if (!text.empty()) t.push_back(index.at(" "));
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    while (n < 4 && i + n < text.size() && (static_cast<uint8_t>(text[i + n]) & 0xC0) == 0x80) ++n;
    auto it = index.find(text.substr(i, n));
    if (it != index.end()) {
      t.push_back(it->second);
    } else {
      for (size_t k = 0; k < n; ++k) t.push_back(static_cast<uint8_t>(text[i + k]) + 3);
    }
    i += n;
  }
  return t;  // merges done by the caller (needs scores)
}

TEST(Llama2cTokenizer, Tok512EncodesLikeRunC) {
  QFORGE_REQUIRE_SHARED(kTok512);
  const std::string path = test::shared_dir() + "/" + kTok512;
  TokenizerOptions opt;
  opt.vocab_size = 512;
  auto tok = must_load(path, opt);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->type_name(), "llama2c");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // Without a vocab size the entries are read to the end of the file: the same 512.
  auto all = must_load(path);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->vocab_size(), 512);

  // Scores for the reference merge loop, read independently of the implementation.
  const std::string raw = read_all(path);
  std::vector<float> scores;
  for (size_t pos = 4; pos + 8 <= raw.size();) {
    float sc;
    int32_t len;
    std::memcpy(&sc, raw.data() + pos, 4);
    std::memcpy(&len, raw.data() + pos + 4, 4);
    scores.push_back(sc);
    pos += 8 + static_cast<size_t>(len);
  }
  ASSERT_EQ(scores.size(), 512u);
  for (const std::string text : {"Zoo", "Once upon a time, there was a little girl named Lily.", "héllo ☃ 🦙 Zoo!\n",
                                 "a", " leading and trailing  ", "\xFF\xFE broken utf-8 \xE2\x82"}) {
    std::vector<int32_t> ref = run_c_encode(*tok, text);
    for (;;) {
      float best = -1e10f;
      int32_t best_id = -1;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < ref.size(); ++i) {
        const std::string joined = std::string(tok->token_text(ref[i])) + std::string(tok->token_text(ref[i + 1]));
        auto id = tok->find_token(joined);
        if (id && scores[static_cast<size_t>(*id)] > best) {
          best = scores[static_cast<size_t>(*id)];
          best_id = *id;
          best_i = i;
        }
      }
      if (best_id < 0) break;
      ref[best_i] = best_id;
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
    }
    const std::vector<int32_t> got = tok->encode(text);
    EXPECT_EQ(got, ref) << "\"" << text << "\": [" << ids_str(got) << "] vs run.c [" << ids_str(ref) << "]";
    EXPECT_EQ(tok->decode(got), text);
    std::vector<int32_t> with_bos = tok->encode(text, /*add_special=*/true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], 1);
    EXPECT_EQ(tok->decode(with_bos), text);
  }
  // "Zoo": a dummy-space prefix merged into word pieces, no byte fallback, fewer tokens than bytes.
  const std::vector<int32_t> zoo = tok->encode("Zoo");
  ASSERT_FALSE(zoo.empty());
  EXPECT_LE(zoo.size(), 3u);
  for (int32_t id : zoo) EXPECT_EQ(tok->token_kind(id), TokenKind::normal) << id;
  EXPECT_EQ(std::string(tok->token_text(zoo[0])).substr(0, 1), " ");
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(Llama2cTokenizer, CorruptFilesAreErrorsNamingTheFile) {
  QFORGE_REQUIRE_SHARED(kTok512);
  const std::string raw = read_all(test::shared_dir() + "/" + kTok512);
  // A truncated copy on disk.
  const std::string path = test::temp_dir() + "/tok512-truncated.bin";
  write_all(path, raw.substr(0, raw.size() - 100));
  TokenizerOptions opt;
  opt.vocab_size = 512;
  auto tok = load_tokenizer(path, opt);
  ASSERT_FALSE(tok.has_value());
  EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().message();
  EXPECT_NE(tok.status().message().find("truncated"), std::string::npos) << tok.status().message();
  // Every truncation is an error, never a crash or an out-of-bounds read.
  auto bytes = [](const std::string& s) { return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  for (size_t n = 0; n < raw.size(); n += (n < 64 ? 1 : 37)) {
    const std::string cut = raw.substr(0, n);  // exactly n bytes on the heap
    auto t = parse_llama2c_tokenizer(bytes(cut), 512, "cut.bin");
    EXPECT_FALSE(t.has_value()) << n << " bytes parsed";
  }
  // More entries requested than the file holds.
  EXPECT_FALSE(parse_llama2c_tokenizer(bytes(raw), 513, "x.bin").has_value());
  // A negative or oversized length field.
  std::string bad = raw;
  const int32_t negative = -5;
  std::memcpy(bad.data() + 4 + 4, &negative, 4);
  auto t = parse_llama2c_tokenizer(bytes(bad), 512, "neg.bin");
  ASSERT_FALSE(t.has_value());
  EXPECT_NE(t.status().message().find("neg.bin"), std::string::npos);
  const int32_t huge = 1 << 30;
  std::memcpy(bad.data() + 4 + 4, &huge, 4);
  EXPECT_FALSE(parse_llama2c_tokenizer(bytes(bad), 512, "huge.bin").has_value());
  EXPECT_FALSE(parse_llama2c_tokenizer(bytes(raw), -1, "neg-vocab.bin").has_value());
}

// --- streaming ---------------------------------------------------------------------------

TEST(TokenStreamDecoder, HoldsBackPartialCharacters) {
  const std::string text = " this is 🦙.cpp — 😶\u200d🌫️ naïve 你好\n";
  for (const char* name : {"gpt-2", "llama-spm"}) {
    QFORGE_REQUIRE_SHARED(std::string(kVocabDir) + "/ggml-vocab-" + name + ".gguf");
    auto tok = must_load(vocab_path(name));
    ASSERT_TRUE(tok);
    const std::vector<int32_t> ids = tok->encode(text, true);
    TokenStreamDecoder stream(*tok);
    std::string out;
    size_t held_back = 0;
    for (int32_t id : ids) {
      const std::string chunk = stream.push(id);
      // Every chunk is whole characters.
      for (const CodePoint& c : decode_utf8(chunk)) EXPECT_LT(c.cp, kInvalidByteBase) << name << ": chunk cuts a character";
      if (chunk.empty()) ++held_back;
      out += chunk;
    }
    out += stream.finish();
    EXPECT_EQ(out, text) << name;  // only the encoder's dummy space prefix is dropped
    EXPECT_GT(held_back, 0u) << name << ": expected byte tokens that wait for the rest of a character";
  }
}

// --- Unicode helpers ------------------------------------------------------------------------

TEST(TokenizerUnicode, CategoriesCaseAndNormalisation) {
  EXPECT_EQ(unicode_category('A'), UnicodeCategory::Lu);
  EXPECT_EQ(unicode_category('a'), UnicodeCategory::Ll);
  EXPECT_EQ(unicode_category('5'), UnicodeCategory::Nd);
  EXPECT_EQ(unicode_category(0xBD), UnicodeCategory::No);     // ½
  EXPECT_EQ(unicode_category(' '), UnicodeCategory::Zs);
  EXPECT_EQ(unicode_category(0x378), UnicodeCategory::Cn);    // unassigned
  EXPECT_EQ(unicode_category(0x1F600), UnicodeCategory::So);  // 😀
  EXPECT_EQ(unicode_category(0x4E00), UnicodeCategory::Lo);
  EXPECT_EQ(unicode_category(0x301), UnicodeCategory::Mn);
  EXPECT_EQ(unicode_category(0x10FFFF), UnicodeCategory::Cn);
  EXPECT_EQ(unicode_category(kInvalidByteBase + 0xFF), UnicodeCategory::Cn);
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_FALSE(is_whitespace(0x200B));
  EXPECT_EQ(unicode_tolower('Q'), static_cast<uint32_t>('q'));
  EXPECT_EQ(unicode_tolower(0x3A3), 0x3C3u);    // Σ -> σ
  EXPECT_EQ(unicode_tolower(0x100), 0x101u);    // Ā -> ā (a stride-2 run)
  EXPECT_EQ(unicode_tolower(0x101), 0x101u);
  EXPECT_EQ(unicode_tolower(0x10400), 0x10428u);  // Deseret
  EXPECT_EQ(combining_class(0x301), 230);
  EXPECT_EQ(combining_class(0x323), 220);
  EXPECT_EQ(combining_class('a'), 0);

  using V = std::vector<uint32_t>;
  EXPECT_EQ(nfd(V{0xE9}), (V{'e', 0x301}));
  EXPECT_EQ(nfd(V{0xD55C}), (V{0x1112, 0x1161, 0x11AB}));  // 한
  EXPECT_EQ(nfc(V{0x1112, 0x1161, 0x11AB}), (V{0xD55C}));
  EXPECT_EQ(nfc(V{'e', 0x301}), (V{0xE9}));
  EXPECT_EQ(nfc(V{0x212B}), (V{0xC5}));                  // Angstrom sign -> Å
  EXPECT_EQ(nfd(V{0x1E9B, 0x323}), (V{0x17F, 0x323, 0x307}));  // UAX #15 example: reordered
  EXPECT_EQ(nfc(V{0x1E9B, 0x323}), (V{0x1E9B, 0x323}));
  EXPECT_EQ(nfc(V{'a', 0x323, 0x302}), (V{0x1EAD}));     // ậ from either mark order
  EXPECT_EQ(nfc(V{'a', 0x302, 0x323}), (V{0x1EAD}));
  EXPECT_EQ(nfc(V{0x344}), (V{0x308, 0x301}));           // an excluded composite stays decomposed
  EXPECT_EQ(nfd_first(0x1EAD), static_cast<uint32_t>('a'));
}

TEST(TokenizerUnicode, LenientUtf8) {
  auto cps = [](std::string_view s) { return utf8_to_codepoints(s); };
  using V = std::vector<uint32_t>;
  EXPECT_EQ(cps("a\xC3\xA9"), (V{'a', 0xE9}));
  EXPECT_EQ(cps("\xC3\x28"), (V{kInvalidByteBase + 0xC3, '('}));
  EXPECT_EQ(cps("\xC0\xAF"), (V{kInvalidByteBase + 0xC0, kInvalidByteBase + 0xAF}));  // overlong
  EXPECT_EQ(cps("\xED\xA0\x80").size(), 3u);                                         // surrogate
  EXPECT_EQ(cps("\xF4\x90\x80\x80").size(), 4u);                                     // above U+10FFFF
  EXPECT_EQ(cps("\xE2\x82"), (V{kInvalidByteBase + 0xE2, kInvalidByteBase + 0x82}));
  for (const std::string s : {"\xC3\x28", "\xF0\x9F\xA6\x99", "x\xE2\x82", "\xFF"}) EXPECT_EQ(codepoints_to_utf8(cps(s)), s);
  EXPECT_EQ(utf8_complete_prefix("a\xE2\x82"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xE2\x82\xAC"), 4u);
  EXPECT_EQ(utf8_complete_prefix("a\xF0"), 1u);
  EXPECT_EQ(utf8_complete_prefix("\xFF"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\x80"), 2u);
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
}

std::vector<std::string> words(std::string_view text, SplitPattern p) {
  std::vector<std::string> out;
  for (const TextRange& r : split_words(text, p)) out.emplace_back(text.substr(r.offset, r.length));
  return out;
}

TEST(TokenizerUnicode, PreTokenizerSplits) {
  using W = std::vector<std::string>;
  EXPECT_EQ(words("Hello world's  test\n\n 123", SplitPattern::gpt2),
            (W{"Hello", " world", "'s", " ", " test", "\n\n", " 123"}));
  EXPECT_EQ(words("I'LL go!?  ", SplitPattern::gpt2), (W{"I", "'", "LL", " go", "!?", "  "}));
  EXPECT_EQ(words("Hello 1234567 ab\r\n\r\n  x", SplitPattern::llama3),
            (W{"Hello", " ", "123", "456", "7", " ab", "\r\n\r\n", " ", " x"}));
  EXPECT_EQ(words("I'LL go!?\n", SplitPattern::llama3), (W{"I", "'LL", " go", "!?\n"}));
  EXPECT_EQ(words("x 12", SplitPattern::qwen2), (W{"x", " ", "1", "2"}));
  EXPECT_EQ(words("", SplitPattern::gpt2), W{});
  // Invalid bytes are kept (as "other" characters), so the words still cover the input.
  const std::string broken = "ab\xFF\xFE cd";
  std::string joined;
  for (const std::string& w : words(broken, SplitPattern::llama3)) joined += w;
  EXPECT_EQ(joined, broken);
}

TEST(LoadTokenizer, PathErrors) {
  auto missing = load_tokenizer("/nonexistent/dir/tokenizer.model");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/tokenizer.model"), std::string::npos);
  const std::string dir = test::temp_dir();
  auto empty_dir = load_tokenizer(dir);
  ASSERT_FALSE(empty_dir.has_value());
  EXPECT_NE(empty_dir.status().message().find(dir), std::string::npos);
  write_all(dir + "/vocab.txt", "hello\n");
  auto unknown = load_tokenizer(dir + "/vocab.txt");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.status().code(), ErrorCode::unsupported);
}

}  // namespace
}  // namespace qforge
