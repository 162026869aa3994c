"""Events as the SDKs send them, for the load scripts (benches/ingest_load.sh,
benches/e2e_load.sh); load_gen adds a unique messageId to every event."""

PAD = "x" * 150


def minimal(i, users=97):
    """A small track event (~340 B) of user i % users."""
    return {"type": "track", "userId": f"user-{i % users}", "event": "Product Viewed",
            "properties": {"sku": f"sku-{i}", "price": 9.99, "pad": PAD},
            "context": {"library": {"name": "load_gen"}}}


def browser(k, users=97):
    """What a browser's analytics.js sends for the Segment e-commerce spec's
    "Product Viewed" (~1.1 KB: the spec's properties, the context analytics.js
    fills in), for user k % users."""
    u = k % users
    url = f"https://shop.example.com/products/{k}"
    return {"type": "track", "event": "Product Viewed", "userId": f"user-{u}",
            "anonymousId": f"5a1c8e2d-9b3f-4e7a-8c6d-{u:012d}",
            "properties": {"product_id": f"507f1f77bcf86cd7994390{k % 100:02d}", "sku": f"G-{k}",
                           "category": "Games", "name": "Monopoly: 3rd Edition", "brand": "Hasbro",
                           "variant": "200 pieces", "price": 18.99, "quantity": 1, "currency": "USD",
                           "position": 3, "value": 18.99, "url": url, "image_url": url + ".jpg"},
            "context": {"library": {"name": "analytics.js", "version": "npm:next-1.84.0"},
                        "page": {"path": f"/products/{k}", "referrer": "https://www.google.com/",
                                 "search": "", "title": "Monopoly: 3rd Edition | Example Shop",
                                 "url": url},
                        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36"
                                     " (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                        "userAgentData": {"brands": [{"brand": "Chromium", "version": "131"},
                                                     {"brand": "Not_A Brand", "version": "24"}],
                                          "mobile": False, "platform": "macOS"},
                        "locale": "en-US", "timezone": "Europe/Berlin"},
            "integrations": {}, "timestamp": "2024-05-01T12:00:00.000Z"}
