"""The one compiled part of cnnrepro: cnnrepro.data._jpeg (region decoding and PIL's resampler for a
window, cnnrepro/data/_jpeg.c), linked against libjpeg-turbo's libjpeg API.

It needs libjpeg-turbo's headers (Debian/Ubuntu: ``apt-get install libjpeg62-turbo-dev`` or
``libjpeg-turbo8-dev``; Fedora: ``libjpeg-turbo-devel``). ``optional=True``: without them the install
still succeeds and the loaders decode whole images (the same pixels, slower); ``cnnrepro bench data``
and a one-time warning in the loader say which path runs."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cnnrepro.data._jpeg", ["cnnrepro/data/_jpeg.c"], libraries=["jpeg"], optional=True)])
