// Backend registry: the CPU backend is always there; unknown or unbuilt backends say so.
#include <gtest/gtest.h>

#include "qforge/backend.h"

namespace {

qforge::BackendInfo fake_probe() {
  qforge::BackendInfo info;
  info.available = false;
  info.detail = "fake device absent";
  return info;
}

TEST(Backend, CpuIsRegisteredFirstAndAvailable) {
  const auto all = qforge::list_backends();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front().name, "cpu");
  EXPECT_TRUE(all.front().available);
  EXPECT_FALSE(all.front().device.empty());
}

TEST(Backend, UnknownBackendIsReportedUnavailable) {
  const qforge::BackendInfo info = qforge::find_backend("no-such-backend");
  EXPECT_EQ(info.name, "no-such-backend");
  EXPECT_FALSE(info.available);
  EXPECT_NE(info.detail.find("not built"), std::string::npos) << info.detail;
}

TEST(Backend, RegisteringTwiceReplacesTheProbe) {
  qforge::register_backend("fake", fake_probe);
  qforge::register_backend("fake", fake_probe);
  int count = 0;
  for (const auto& b : qforge::list_backends()) {
    if (b.name == "fake") {
      ++count;
      EXPECT_FALSE(b.available);
      EXPECT_EQ(b.detail, "fake device absent");
    }
  }
  EXPECT_EQ(count, 1);
}

}  // namespace
