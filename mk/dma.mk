# SPDX-License-Identifier: MIT
# dma: see the component it builds.
