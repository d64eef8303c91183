"""The MPC runtime under the mean-shift engine: links between ranks (a transport
interface and its TLS mesh), CrypTen's communicator over them, AES-CTR random
streams, the dealer's correlated randomness and the protocols that consume it
(Beaver products, truncation, the sign test, division), fixed-point helpers,
CrypTen's torch-2.x compatibility step, and every change made to CrypTen
(crypten_patches.py). It knows nothing of mean-shift: it imports only itself,
the engine's leaf module of error types (``secure_meanshift.errors``) and
third-party libraries (torch, CrypTen, numpy, cryptography, omegaconf); the
engine (``protocol.py``, ``runtime.py``) builds on it.
"""
