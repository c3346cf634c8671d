"""fedrec.simulation"""
