"""GANs as energy-based models: the GAN (model), its generators and discriminators (networks) and
DDLS, Langevin sampling of the latent energy they define (ddls).
"""
