"""Backbones: the networks f(x) an energy model is built on (WRN, convnets, MLPs).
"""
