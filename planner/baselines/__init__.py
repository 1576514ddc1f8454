"""accelerate's own device maps (the incumbent) and the side-by-side comparison with layerplan's."""
