"""Model variants, one package each (sd, glide_mini, discffusion, vcdm), plus shared parts."""
