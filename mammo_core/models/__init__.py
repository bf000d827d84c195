"""Model registry and builders (scratch CNNs, transfer learning)."""
