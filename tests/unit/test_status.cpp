#include <gtest/gtest.h>

#include "qforge/status.h"

namespace qforge {
namespace {

Expected<int> parse_positive(int v) {
  if (v <= 0) return invalid_argument("value " + std::to_string(v) + " is not positive");
  return v;
}

Status use_parse(int v, int* out) {
  QFORGE_ASSIGN_OR_RETURN(*out, parse_positive(v));
  return Status::ok();
}

TEST(Status, ExpectedCarriesValueOrError) {
  auto good = parse_positive(3);
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(*good, 3);
  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.status().code(), ErrorCode::invalid_argument);
  EXPECT_NE(bad.status().to_string().find("-1 is not positive"), std::string::npos);
}

TEST(Status, AssignOrReturnPropagates) {
  int out = 0;
  EXPECT_TRUE(use_parse(5, &out).is_ok());
  EXPECT_EQ(out, 5);
  Status s = use_parse(0, &out);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.with_context("file.bin").message(), "file.bin: value 0 is not positive");
}

}  // namespace
}  // namespace qforge
