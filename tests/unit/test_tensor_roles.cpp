#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "qforge/tensor_roles.h"
#include "test_support.h"

namespace qforge {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// Tensor names from a safetensors header, read directly so this test depends only on the role map.
std::vector<std::string> safetensors_names(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_TRUE(in && n < (1u << 26)) << path;
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  std::vector<std::string> names;
  const nlohmann::json parsed = nlohmann::json::parse(header);
  for (const auto& [k, v] : parsed.items())
    if (k != "__metadata__") names.push_back(k);
  return names;
}

TEST(TensorRoles, ResolvesLlamaTemplatesExactly) {
  auto r = resolve_tensor_role(Architecture::llama, "model.layers.12.self_attn.q_proj.weight");
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  EXPECT_EQ(r->role, TensorRole::attn_q);
  EXPECT_EQ(r->layer, 12);
  EXPECT_FALSE(r->is_bias);

  r = resolve_tensor_role(Architecture::qwen2, "model.layers.0.self_attn.v_proj.bias");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->role, TensorRole::attn_v);
  EXPECT_TRUE(r->is_bias);

  r = resolve_tensor_role(Architecture::llama, "lm_head.weight");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->role, TensorRole::output);
  EXPECT_EQ(r->layer, -1);
}

TEST(TensorRoles, RejectsBogusNames) {
  const char* bogus[] = {
      "model.layers.x.self_attn.q_proj.weight",   // not a number
      "model.layers.-1.self_attn.q_proj.weight",  // sign
      "model.layers.01.self_attn.q_proj.weight",  // leading zero
      "model.layers..self_attn.q_proj.weight",    // empty layer
      "model.layers.0.self_attn.q_proj.weightx",  // trailing junk
      "xmodel.layers.0.self_attn.q_proj.weight",  // leading junk
      "model.layers.0.self_attn.q_proj",          // truncated
      "model.layers.0.self_attn.q_proj.weight.1",
      "model.layers.0.mlp.gate_proj.bias.weight",
      "model.layers.1234567.mlp.up_proj.weight",  // absurd layer count
      "",
      "blk.0.attn_q.weight",  // GGUF name under HF naming
  };
  for (const char* name : bogus) {
    auto r = resolve_tensor_role(Architecture::llama, name);
    EXPECT_FALSE(r.has_value()) << "accepted '" << name << "'";
  }
  // Mistral has no biases; qwen2 has no o_proj bias.
  EXPECT_FALSE(resolve_tensor_role(Architecture::mistral, "model.layers.0.self_attn.q_proj.bias").has_value());
  EXPECT_FALSE(resolve_tensor_role(Architecture::qwen2, "model.layers.0.self_attn.o_proj.bias").has_value());
  // A llama name is not a gpt2 name.
  auto r = resolve_tensor_role(Architecture::gpt2, "model.layers.0.self_attn.q_proj.weight");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.status().message().find("model.layers.0.self_attn.q_proj.weight"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("gpt2"), std::string::npos) << r.status().message();
}

TEST(TensorRoles, GgufNamesForLlama) {
  struct Case {
    const char* name;
    TensorRole role;
    int layer;
    bool bias;
  };
  const Case cases[] = {
      {"token_embd.weight", TensorRole::token_embedding, -1, false},
      {"output_norm.weight", TensorRole::final_norm, -1, false},
      {"output.weight", TensorRole::output, -1, false},
      {"blk.7.attn_q.weight", TensorRole::attn_q, 7, false},
      {"blk.7.attn_k.weight", TensorRole::attn_k, 7, false},
      {"blk.7.attn_v.bias", TensorRole::attn_v, 7, true},
      {"blk.31.attn_output.weight", TensorRole::attn_output, 31, false},
      {"blk.0.attn_norm.weight", TensorRole::attn_norm, 0, false},
      {"blk.0.ffn_norm.weight", TensorRole::mlp_norm, 0, false},
      {"blk.0.ffn_gate.weight", TensorRole::mlp_gate, 0, false},
      {"blk.0.ffn_up.weight", TensorRole::mlp_up, 0, false},
      {"blk.0.ffn_down.weight", TensorRole::mlp_down, 0, false},
  };
  for (const Case& c : cases) {
    auto r = resolve_tensor_role(Architecture::llama, c.name, TensorNaming::gguf);
    ASSERT_TRUE(r.has_value()) << c.name << ": " << r.status().to_string();
    EXPECT_EQ(*r, (ResolvedTensor{c.role, c.layer, c.bias})) << c.name;
    auto name = tensor_name_for_role(Architecture::llama, c.role, c.layer, c.bias, TensorNaming::gguf);
    ASSERT_TRUE(name.has_value());
    EXPECT_EQ(*name, c.name);
  }
  EXPECT_FALSE(resolve_tensor_role(Architecture::llama, "model.norm.weight", TensorNaming::gguf).has_value());
}

TEST(TensorRoles, NameForRoleRoundTripsEveryTemplate) {
  for (Architecture arch : all_architectures()) {
    for (TensorNaming naming : {TensorNaming::hf, TensorNaming::gguf}) {
      for (const RoleTemplate& t : role_templates(arch, naming)) {
        bool per_layer = std::string(t.pattern).find("{L}") != std::string::npos;
        int layer = per_layer ? 3 : -1;
        auto name = tensor_name_for_role(arch, t.role, layer, t.is_bias, naming);
        ASSERT_TRUE(name.has_value()) << t.pattern;
        auto r = resolve_tensor_role(arch, *name, naming);
        ASSERT_TRUE(r.has_value()) << *name;
        EXPECT_EQ(*r, (ResolvedTensor{t.role, layer, t.is_bias})) << *name;
      }
    }
  }
  EXPECT_FALSE(tensor_name_for_role(Architecture::llama, TensorRole::attn_q, -1, false).has_value());
  EXPECT_FALSE(tensor_name_for_role(Architecture::llama, TensorRole::final_norm, 2, false).has_value());
  EXPECT_FALSE(tensor_name_for_role(Architecture::llama, TensorRole::pooler, -1, false).has_value());
}

TEST(TensorRoles, LinearSelection) {
  for (TensorRole r : {TensorRole::attn_q, TensorRole::attn_k, TensorRole::attn_v, TensorRole::attn_qkv,
                       TensorRole::attn_output, TensorRole::mlp_gate, TensorRole::mlp_up, TensorRole::mlp_down})
    EXPECT_TRUE(is_linear_weight(r)) << tensor_role_name(r);
  for (TensorRole r : {TensorRole::token_embedding, TensorRole::position_embedding, TensorRole::output,
                       TensorRole::attn_norm, TensorRole::final_norm, TensorRole::pooler, TensorRole::buffer})
    EXPECT_FALSE(is_linear_weight(r)) << tensor_role_name(r);
  EXPECT_TRUE(linear_weights_transposed(Architecture::gpt2, TensorNaming::hf));
  EXPECT_FALSE(linear_weights_transposed(Architecture::gpt2, TensorNaming::gguf));
  EXPECT_FALSE(linear_weights_transposed(Architecture::llama, TensorNaming::hf));
}

TEST(TensorRoles, ArchitectureFromConfig) {
  auto a = architecture_from_config(nlohmann::json{{"model_type", "qwen2"}}, "cfg");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, Architecture::qwen2);
  a = architecture_from_config(nlohmann::json{{"architectures", {"GPT2LMHeadModel"}}}, "cfg");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, Architecture::gpt2);
  a = architecture_from_config(nlohmann::json{{"model_type", "phi3"}, {"architectures", {"Phi3ForCausalLM"}}},
                               "dir/config.json");
  ASSERT_FALSE(a.has_value());
  EXPECT_NE(a.status().message().find("phi3"), std::string::npos) << a.status().message();
  EXPECT_NE(a.status().message().find("dir/config.json"), std::string::npos) << a.status().message();
  EXPECT_FALSE(architecture_from_config(nlohmann::json::object(), "cfg").has_value());
  EXPECT_FALSE(architecture_from_config(nlohmann::json::array(), "cfg").has_value());
  for (Architecture arch : all_architectures()) {
    auto back = architecture_from_name(architecture_name(arch));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, arch);
  }
  EXPECT_FALSE(architecture_from_name("llamaa").has_value());
}

void expect_all_resolve(Architecture arch, const std::vector<std::string>& names, const std::string& source) {
  ASSERT_FALSE(names.empty()) << source;
  std::set<std::pair<int, int>> seen;  // (role, layer) of weights, to catch duplicate mappings
  for (const std::string& name : names) {
    auto r = resolve_tensor_role(arch, name);
    ASSERT_TRUE(r.has_value()) << source << ": " << r.status().to_string();
    if (!r->is_bias && r->role != TensorRole::buffer) {
      EXPECT_TRUE(seen.insert({static_cast<int>(r->role), r->layer}).second) << source << ": duplicate " << name;
    }
    auto canonical = tensor_name_for_role(arch, r->role, r->layer, r->is_bias);
    ASSERT_TRUE(canonical.has_value()) << name;
    EXPECT_EQ(*canonical, name) << source;
  }
}

TEST(TensorRoles, RefLlama25mIndexResolves) {
  QFORGE_REQUIRE_SHARED("models/ref-llama-25m/model.safetensors.index.json");
  std::string dir = test::shared_dir() + "/models/ref-llama-25m";
  auto arch = architecture_from_config_file(dir + "/config.json");
  ASSERT_TRUE(arch.has_value()) << arch.status().to_string();
  EXPECT_EQ(*arch, Architecture::llama);
  std::vector<std::string> names;
  const nlohmann::json index = read_json(dir + "/model.safetensors.index.json");
  for (const auto& [k, v] : index.at("weight_map").items()) names.push_back(k);
  EXPECT_EQ(names.size(), 2u + 8u * 9u);  // embed + final norm + 9 tensors per layer
  expect_all_resolve(*arch, names, dir);
}

TEST(TensorRoles, HfGoldenCheckpointsResolve) {
  QFORGE_REQUIRE_SHARED("models/hf-goldens");
  const std::pair<const char*, Architecture> archs[] = {
      {"llama-gqa-untied", Architecture::llama}, {"llama-tied", Architecture::llama},
      {"qwen2-bias", Architecture::qwen2},       {"mistral", Architecture::mistral},
      {"gpt2", Architecture::gpt2},              {"bert", Architecture::bert},
  };
  for (const auto& [dirname, expected] : archs) {
    std::string dir = test::shared_dir() + "/models/hf-goldens/" + dirname;
    if (!fs::exists(dir + "/model.safetensors")) {
      ADD_FAILURE() << dir << "/model.safetensors missing";
      continue;
    }
    auto arch = architecture_from_config_file(dir + "/config.json");
    ASSERT_TRUE(arch.has_value()) << arch.status().to_string();
    EXPECT_EQ(*arch, expected) << dir;
    expect_all_resolve(*arch, safetensors_names(dir + "/model.safetensors"), dir);
  }
}

}  // namespace
}  // namespace qforge
