"""The belt sorter PLC over Modbus TCP: the register map (``registers``) and the driver."""
