import type { NextConfig } from "next";

// Static export: `make install` builds web/out, which `autotrade api serve` serves at / next to the API.
const config: NextConfig = {
  output: "export",
  trailingSlash: true,
  images: { unoptimized: true },
  poweredByHeader: false,
};

export default config;
