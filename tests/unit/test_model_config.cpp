#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "qforge/model.h"
#include "test_support.h"

namespace qforge {
namespace {

using json = nlohmann::json;

json llama_config() {
  return json{{"model_type", "llama"},
              {"architectures", {"LlamaForCausalLM"}},
              {"hidden_size", 64},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 160},
              {"vocab_size", 512},
              {"rms_norm_eps", 1e-6},
              {"max_position_embeddings", 128},
              {"rope_theta", 500000.0},
              {"tie_word_embeddings", true},
              {"bos_token_id", 1},
              {"eos_token_id", {2, 3}}};
}

void expect_error_mentions(const Status& s, std::initializer_list<const char*> words) {
  ASSERT_FALSE(s.is_ok());
  for (const char* w : words) EXPECT_NE(s.message().find(w), std::string::npos) << "'" << w << "' not in: " << s.message();
}

TEST(ModelConfig, ParsesLlama) {
  auto c = parse_model_config(llama_config(), "cfg.json");
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->arch, Architecture::llama);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 16);  // hidden / heads when head_dim is absent
  EXPECT_EQ(c->intermediate_size, 160);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_DOUBLE_EQ(c->norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c->norm, NormType::rms_norm);
  EXPECT_EQ(c->mlp, MlpType::gated_silu);
  EXPECT_EQ(c->rope, RopeStyle::half_split);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_TRUE(c->causal);
}

TEST(ModelConfig, RopeThetaFromTransformers5RopeParameters) {
  json j = llama_config();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 1234.0}, {"rope_type", "default"}};
  auto c = parse_model_config(j, "cfg.json");
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_DOUBLE_EQ(c->rope_theta, 1234.0);

  j.erase("rope_parameters");
  c = parse_model_config(j, "cfg.json");
  ASSERT_TRUE(c.has_value());
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);  // HF default

  j["rope_parameters"] = {{"rope_theta", 1234.0}, {"rope_type", "llama3"}, {"factor", 8.0}};
  expect_error_mentions(parse_model_config(j, "cfg.json").status(), {"llama3", "cfg.json"});
  j.erase("rope_parameters");
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error_mentions(parse_model_config(j, "cfg.json").status(), {"linear"});
}

TEST(ModelConfig, MissingRequiredFieldNamesFieldAndFile) {
  for (const char* field : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                            "vocab_size", "rms_norm_eps"}) {
    json j = llama_config();
    j.erase(field);
    auto c = parse_model_config(j, "models/x/config.json");
    expect_error_mentions(c.status(), {field, "models/x/config.json"});
  }
  json g = {{"model_type", "gpt2"}, {"n_embd", 64}, {"n_layer", 2}, {"n_head", 4}, {"vocab_size", 100},
            {"n_positions", 32}};
  expect_error_mentions(parse_model_config(g, "g.json").status(), {"layer_norm_epsilon", "g.json"});
}

TEST(ModelConfig, RejectsBadValues) {
  json j = llama_config();
  j["hidden_size"] = "64";
  expect_error_mentions(parse_model_config(j, "c.json").status(), {"hidden_size", "integer"});
  j = llama_config();
  j["num_key_value_heads"] = 3;  // 4 heads are not a multiple of 3
  expect_error_mentions(parse_model_config(j, "c.json").status(), {"num_kv_heads"});
  j = llama_config();
  j["num_hidden_layers"] = 0;
  expect_error_mentions(parse_model_config(j, "c.json").status(), {"num_layers"});
  j = llama_config();
  j["hidden_size"] = int64_t{1} << 40;
  expect_error_mentions(parse_model_config(j, "c.json").status(), {"hidden_size"});
  j = llama_config();
  j["hidden_act"] = "relu";
  expect_error_mentions(parse_model_config(j, "c.json").status(), {"relu"});
  j = llama_config();
  j["rms_norm_eps"] = -1.0;
  EXPECT_FALSE(parse_model_config(j, "c.json").has_value());
}

TEST(ModelConfig, UnknownArchitecture) {
  json j = llama_config();
  j["model_type"] = "falcon";
  j["architectures"] = {"FalconForCausalLM"};
  expect_error_mentions(parse_model_config(j, "dir/config.json").status(), {"falcon", "dir/config.json"});
  j.erase("model_type");
  j.erase("architectures");
  expect_error_mentions(parse_model_config(j, "dir/config.json").status(), {"model_type", "dir/config.json"});
}

TEST(ModelConfig, LoadFromFileAndDirectory) {
  std::string dir = test::temp_dir();
  {
    std::ofstream out(dir + "/config.json");
    out << llama_config().dump();
  }
  auto a = load_model_config(dir);
  ASSERT_TRUE(a.has_value()) << a.status().to_string();
  auto b = load_model_config(dir + "/config.json");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a->hidden_size, b->hidden_size);
  {
    std::ofstream out(dir + "/config.json");
    out << "{ not json";
  }
  expect_error_mentions(load_model_config(dir).status(), {"config.json", "JSON"});
  expect_error_mentions(load_model_config(dir + "/nope").status(), {"nope"});
}

TEST(ModelConfig, HfGoldenConfigs) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  const std::string root = test::shared_dir() + "/models/hf-goldens/";
  auto tied = load_model_config(root + "llama-tied");
  ASSERT_TRUE(tied.has_value()) << tied.status().to_string();
  EXPECT_DOUBLE_EQ(tied->rope_theta, 500000.0);
  EXPECT_TRUE(tied->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(tied->norm_eps, 1e-6);

  auto untied = load_model_config(root + "llama-gqa-untied");
  ASSERT_TRUE(untied.has_value());
  EXPECT_FALSE(untied->tie_word_embeddings);
  EXPECT_EQ(untied->num_kv_heads, 2);

  auto mistral = load_model_config(root + "mistral");
  ASSERT_TRUE(mistral.has_value());
  EXPECT_EQ(mistral->arch, Architecture::mistral);
  EXPECT_EQ(mistral->num_kv_heads, 1);
  EXPECT_EQ(mistral->sliding_window, 0);

  auto qwen = load_model_config(root + "qwen2-bias");
  ASSERT_TRUE(qwen.has_value());
  EXPECT_TRUE(qwen->qkv_bias);
  EXPECT_FALSE(qwen->attn_output_bias);
  EXPECT_DOUBLE_EQ(qwen->rope_theta, 1e6);
  EXPECT_EQ(qwen->bos_token_id, -1);

  auto gpt2 = load_model_config(root + "gpt2");
  ASSERT_TRUE(gpt2.has_value());
  EXPECT_EQ(gpt2->intermediate_size, 4 * 64);  // n_inner null
  EXPECT_EQ(gpt2->mlp, MlpType::gelu_tanh);
  EXPECT_TRUE(gpt2->fused_qkv);
  EXPECT_EQ(gpt2->norm, NormType::layer_norm);
  EXPECT_EQ(gpt2->rope, RopeStyle::none);

  auto bert = load_model_config(root + "bert");
  ASSERT_TRUE(bert.has_value());
  EXPECT_FALSE(bert->causal);
  EXPECT_FALSE(bert->pre_norm);
  EXPECT_EQ(bert->mlp, MlpType::gelu_erf);
  EXPECT_EQ(bert->type_vocab_size, 2);
  EXPECT_DOUBLE_EQ(bert->norm_eps, 1e-12);
}

TEST(ModelConfig, RefLlama25m) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m/config.json");
  auto c = load_model_config(test::shared_dir() + "/models/ref-llama-25m");
  ASSERT_TRUE(c.has_value()) << c.status().to_string();
  EXPECT_EQ(c->hidden_size, 384);
  EXPECT_EQ(c->num_layers, 8);
  EXPECT_EQ(c->num_heads, 6);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 1024);
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->max_positions, 1024);
}

}  // namespace
}  // namespace qforge
