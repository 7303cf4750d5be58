"""OPC-UA pieces shared by the server sink and a client source.

* ``variants``: our ``DataType`` <-> ``ua.VariantType`` (and each type's range).
* ``units``: a config unit -> ``EUInformation`` (UNECE code where known).
* ``status``: ``model.Quality`` <-> ``ua.StatusCode``, both directions.
* ``security``: password hashes, the user manager, the certificate trust list and the
  application certificate (``python -m edge.protocols.opcua.security hash``).
"""
