"""The cache port (`Cache`, `CacheUnavailable`) and its adapters: `RedisCache`, and `MemoryCache` for
the embedded mode."""
