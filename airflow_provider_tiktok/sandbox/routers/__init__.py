"""The emulator's routers: TikTok's API by family, and the emulator-only admin routes."""
