//! EnergyPolicy controller: finds energy-starved nodes and Flotta devices and moves work away
